package cs

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

// APIVersion is the Container Service (ACK) API version the SDK sends in
// x-acs-version.
const APIVersion = "2015-12-15"

// Limits of TemporaryDurationMinutes, and the lifetime of a kubeconfig asked
// for without it (the real API then issues a credential valid for years).
const (
	MinTemporaryDurationMinutes = 15
	MaxTemporaryDurationMinutes = 4320
	DefaultCredentialLifetime   = 3 * 365 * 24 * time.Hour
)

// Error codes the stand-in answers with (lower-case "code"/"message" bodies,
// as CS does). The gateway codes are the Alibaba Cloud API gateway's.
const (
	CodeIncompleteSignature    = "IncompleteSignature"
	CodeSignatureDoesNotMatch  = "SignatureDoesNotMatch"
	CodeInvalidSignatureMethod = "InvalidSignatureMethod"
	CodeAccessKeyNotFound      = "InvalidAccessKeyId.NotFound"
	CodeMissingSecurityToken   = "MissingSecurityToken"
	CodeSecurityTokenMismatch  = "InvalidSecurityToken.MismatchWithAccessKey"
	CodeSecurityTokenExpired   = "InvalidSecurityToken.Expired"
	CodeMissingDate            = "MissingDate"
	CodeTimestampFormat        = "InvalidTimeStamp.Format"
	CodeTimestampExpired       = "InvalidTimeStamp.Expired"
	CodeInvalidVersion         = "InvalidVersion"
	CodeInvalidParameter       = "InvalidParameter"
	CodeClusterNotFound        = "ErrorClusterNotFound"
	CodeNotFound               = "InvalidAction.NotFound"
	CodeUnsupportedHTTPMethod  = "UnsupportedHTTPMethod"
)

const (
	dateLayout                         = "Mon, 02 Jan 2006 15:04:05 GMT" // RFC 2616, as the SDK sends it
	userConfigPrefix, userConfigSuffix = "/k8s/", "/user_config"
)

// Options configures a Server.
type Options struct {
	// Credentials are the AccessKey pairs the server accepts (the KMS
	// stand-in's type: an STS key must come with its SecurityToken and is
	// refused after its Expiration).
	Credentials []kmsapi.Credential
	// Clock judges STS expiry, the Date header and expirations; nil means the
	// real clock.
	Clock clock.PassiveClock
	// MaxClockSkew, when positive, refuses a Date header further than this
	// from the clock (the real gateway allows 15 minutes).
	MaxClockSkew time.Duration
}

// Call is one DescribeClusterUserKubeconfig request the server answered
// successfully.
type Call struct {
	// ClusterID is the path's cluster.
	ClusterID string
	// PrivateIPAddress is the PrivateIpAddress query parameter.
	PrivateIPAddress bool
	// TemporaryDurationMinutes is the query parameter (0 when absent).
	TemporaryDurationMinutes int
	// AccessKeyID signed the request.
	AccessKeyID string
	// Expiration is what the answer said.
	Expiration time.Time
}

// Server is the CS stand-in: an http.Handler serving
// GET /k8s/{ClusterId}/user_config. Create it with NewServer; it is safe for
// concurrent use.
type Server struct {
	opts  Options
	creds map[string]kmsapi.Credential

	mu       sync.Mutex
	clusters map[string]string
	calls    []Call
}

var _ http.Handler = (*Server)(nil)

// NewServer validates opts and returns a server without clusters.
func NewServer(opts Options) (*Server, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	creds := make(map[string]kmsapi.Credential, len(opts.Credentials))
	for i, c := range opts.Credentials {
		if c.AccessKeyID == "" || c.AccessKeySecret == "" {
			return nil, fmt.Errorf("new cs server: credential %d: accessKeyId and accessKeySecret are required", i)
		}
		if _, dup := creds[c.AccessKeyID]; dup {
			return nil, fmt.Errorf("new cs server: credential %d: duplicate accessKeyId", i)
		}
		creds[c.AccessKeyID] = c
	}
	return &Server{opts: opts, creds: creds, clusters: map[string]string{}}, nil
}

// Register makes DescribeClusterUserKubeconfig of clusterID answer kubeconfig
// (replacing an earlier one).
func (s *Server) Register(clusterID, kubeconfig string) error {
	if clusterID == "" || strings.ContainsAny(clusterID, "/?#") {
		return fmt.Errorf("register cluster %q: want a non-empty ID without '/', '?' or '#'", clusterID)
	}
	if kubeconfig == "" {
		return fmt.Errorf("register cluster %q: empty kubeconfig", clusterID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[clusterID] = kubeconfig
	return nil
}

// Calls returns the successful calls so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// apiError is answered as {"code","message","requestId"} with its status.
type apiError struct {
	status        int
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func newError(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := newRequestID()
	w.Header().Set("x-acs-request-id", rid)
	body, aerr := s.handle(r)
	if aerr != nil {
		writeJSON(w, aerr.status, map[string]string{"code": aerr.code, "message": aerr.message, "requestId": rid})
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) handle(r *http.Request) (any, *apiError) {
	path := r.URL.Path
	if !strings.HasPrefix(path, userConfigPrefix) || !strings.HasSuffix(path, userConfigSuffix) ||
		len(path) <= len(userConfigPrefix)+len(userConfigSuffix) {
		return nil, newError(http.StatusNotFound, CodeNotFound, "Specified api is not found, please check your url and method.")
	}
	clusterID := path[len(userConfigPrefix) : len(path)-len(userConfigSuffix)]
	if strings.Contains(clusterID, "/") {
		return nil, newError(http.StatusNotFound, CodeNotFound, "Specified api is not found, please check your url and method.")
	}
	if r.Method != http.MethodGet {
		return nil, newError(http.StatusMethodNotAllowed, CodeUnsupportedHTTPMethod, "This http method is not supported.")
	}
	now := s.opts.Clock.Now()
	cred, aerr := s.authenticate(r, now)
	if aerr != nil {
		return nil, aerr
	}
	if v := r.Header.Get("x-acs-version"); v != "" && v != APIVersion {
		return nil, newError(http.StatusBadRequest, CodeInvalidVersion, "Specified parameter Version is not valid.")
	}

	q := r.URL.Query()
	call := Call{ClusterID: clusterID, AccessKeyID: cred.AccessKeyID}
	if v := q.Get("PrivateIpAddress"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidParameter, "PrivateIpAddress must be true or false")
		}
		call.PrivateIPAddress = b
	}
	lifetime := DefaultCredentialLifetime
	if v := q.Get("TemporaryDurationMinutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < MinTemporaryDurationMinutes || n > MaxTemporaryDurationMinutes {
			return nil, newError(http.StatusBadRequest, CodeInvalidParameter,
				fmt.Sprintf("TemporaryDurationMinutes must be an integer from %d to %d", MinTemporaryDurationMinutes, MaxTemporaryDurationMinutes))
		}
		call.TemporaryDurationMinutes = n
		lifetime = time.Duration(n) * time.Minute
	}

	s.mu.Lock()
	kubeconfig, ok := s.clusters[clusterID]
	s.mu.Unlock()
	if !ok {
		return nil, newError(http.StatusNotFound, CodeClusterNotFound, "cluster "+clusterID+" not found")
	}
	call.Expiration = now.Add(lifetime).UTC().Truncate(time.Second)
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	return map[string]string{"config": kubeconfig, "expiration": call.Expiration.Format(time.RFC3339)}, nil
}

// authenticate checks the ROA signature (Authorization: acs AK:base64(HMAC-SHA1(
// secret, stringToSign)), SignatureVersion 1.0) and the STS token.
func (s *Server) authenticate(r *http.Request, now time.Time) (kmsapi.Credential, *apiError) {
	auth := r.Header.Get("Authorization")
	akID, sig, ok := strings.Cut(strings.TrimPrefix(auth, "acs "), ":")
	if !strings.HasPrefix(auth, "acs ") || !ok || akID == "" || sig == "" {
		return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeIncompleteSignature,
			"The request signature does not conform to Aliyun standards.")
	}
	if m := r.Header.Get("x-acs-signature-method"); m != "HMAC-SHA1" {
		return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeInvalidSignatureMethod,
			"Specified signature method is not supported.")
	}
	date := r.Header.Get("Date")
	if date == "" {
		return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeMissingDate, "The Date header is required.")
	}
	sent, err := time.Parse(dateLayout, date)
	if err != nil {
		return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeTimestampFormat,
			"Specified time stamp or date value is not well formatted.")
	}
	cred, ok := s.creds[akID]
	if !ok {
		return kmsapi.Credential{}, newError(http.StatusNotFound, CodeAccessKeyNotFound, "Specified access key is not found.")
	}
	if cred.SecurityToken != "" {
		token := r.Header.Get("x-acs-security-token")
		switch {
		case token == "":
			return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeMissingSecurityToken,
				"SecurityToken is mandatory for this action.")
		case subtle.ConstantTimeCompare([]byte(token), []byte(cred.SecurityToken)) != 1:
			return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeSecurityTokenMismatch,
				"Specified SecurityToken mismatch with the AccessKey.")
		case !cred.Expiration.IsZero() && !now.Before(cred.Expiration):
			return kmsapi.Credential{}, newError(http.StatusForbidden, CodeSecurityTokenExpired,
				"Specified SecurityToken is expired.")
		}
	}
	toSign := StringToSign(r)
	got, err := base64.StdEncoding.DecodeString(sig)
	mac := hmac.New(sha1.New, []byte(cred.AccessKeySecret))
	mac.Write([]byte(toSign))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		// Like the real gateway, the message echoes the string to sign, which
		// holds the STS token: callers must not log such errors unsanitised.
		return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeSignatureDoesNotMatch,
			"Specified signature is not matched with our calculation. server string to sign is:"+toSign)
	}
	if s.opts.MaxClockSkew > 0 {
		if d := now.Sub(sent); d > s.opts.MaxClockSkew || d < -s.opts.MaxClockSkew {
			return kmsapi.Credential{}, newError(http.StatusBadRequest, CodeTimestampExpired,
				"Specified time stamp or date value is expired.")
		}
	}
	return cred, nil
}

// StringToSign is the ROA string to sign of r: the method, the Accept,
// Content-MD5, Content-Type and Date headers that are set (each followed by a
// newline), every x-acs-* header as "name:value" sorted by lower-cased name,
// and the canonical resource: the path, then "?" and the decoded query
// parameters sorted by name ("k=v", or "k" when empty) joined by "&".
func StringToSign(r *http.Request) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	for _, h := range []string{"Accept", "Content-MD5", "Content-Type", "Date"} {
		if v := r.Header.Get(h); v != "" {
			b.WriteString(v)
			b.WriteByte('\n')
		}
	}
	acs := map[string]string{}
	for name, vals := range r.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "x-acs-") && len(vals) > 0 {
			acs[lower] = vals[0]
		}
	}
	names := make([]string, 0, len(acs))
	for n := range acs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString(n + ":" + acs[n] + "\n")
	}
	b.WriteString(r.URL.Path)
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(k)
		if v := q.Get(k); v != "" {
			b.WriteString("=" + v)
		}
	}
	return b.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
