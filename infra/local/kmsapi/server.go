package kmsapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// API versions the server answers, and the debug path it serves.
const (
	kmsVersion      = "2016-01-20"
	trailVersion    = "2020-07-06"
	resourceTypeKey = "ACS::KMS::Key"
	// StatsPath serves the call counters as JSON (GET, unauthenticated). It is
	// not part of the KMS API.
	StatsPath = "/_local/stats"
	// maxCountedActions bounds the distinct Action names counted.
	maxCountedActions = 1024
)

// Server is the local KMS and ActionTrail endpoint. Create it with NewServer;
// it is an http.Handler and is safe for concurrent use.
type Server struct {
	opts  Options
	creds map[string]Credential

	mu sync.Mutex // guards st
	st *state

	countMu sync.RWMutex
	counts  map[string]*atomic.Int64

	recMu   sync.Mutex
	records []Record
	nextSeq uint64

	throttled sync.Map // action -> true: answer Throttling.User (Throttle)
}

// CodeThrottlingUser is the API gateway's answer to a caller over its request quota.
const CodeThrottlingUser = "Throttling.User"

// Throttle makes every authenticated call of action (e.g. "LookupEvents") answer
// Throttling.User with HTTP 400, as Alibaba Cloud's API gateway does for a caller over its quota,
// until Throttle(action, false). A fault for tests of what a throttled service does to rekey.
func (s *Server) Throttle(action string, on bool) {
	if on {
		s.throttled.Store(action, true)
	} else {
		s.throttled.Delete(action)
	}
}

var _ http.Handler = (*Server)(nil)

var errNoStateDir = errors.New("the directory must exist")

// NewServer validates opts, applies defaults and loads the state file named
// by opts.StatePath (a missing file is an empty state).
func NewServer(opts Options) (*Server, error) {
	opts.applyDefaults()
	creds, err := validateCredentials(opts.Credentials)
	if err != nil {
		return nil, fmt.Errorf("new kms server: %w", err)
	}
	if opts.StatePath != "" {
		if fi, err := os.Stat(filepath.Dir(opts.StatePath)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("new kms server: state directory of %s is not usable: %w", opts.StatePath, errNoStateDir)
		}
	}
	st, err := loadState(opts.StatePath)
	if err != nil {
		return nil, fmt.Errorf("new kms server: %w", err)
	}
	return &Server{
		opts:   opts,
		creds:  creds,
		st:     st,
		counts: map[string]*atomic.Int64{},
	}, nil
}

// call is the context of one API request.
type call struct {
	s         *Server
	p         params
	now       time.Time
	requestID string
	cred      Credential
	authed    bool

	action, version string
	resourceID      string            // resolved key ID, for the Record
	elements        map[string]string // responseElements
	dirty           bool              // state changed; persist before answering
}

type handler func(c *call) (any, *apiError)

// ServeHTTP answers one RPC call (or the stats path).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == StatsPath {
		s.serveStats(w, r)
		return
	}
	now := s.opts.Clock.Now()
	rid, err := newUUID()
	if err != nil {
		http.Error(w, "request id unavailable", http.StatusInternalServerError)
		return
	}
	c := &call{s: s, now: now, requestID: rid, p: params{}}
	resp, aerr := s.handle(c, r)

	host := s.opts.EventSource
	if host == "" {
		host = r.Host
	}
	s.addRecord(s.recordFor(c, r, host, aerr))

	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("x-acs-request-id", rid)
	product := "Kms"
	if c.version == trailVersion {
		product = "Actiontrail"
	}
	if aerr != nil {
		s.opts.Logger.Debug("kms-local call failed", "action", c.action, "code", aerr.code,
			"status", aerr.status, "requestId", rid)
		w.WriteHeader(aerr.status)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"RequestId": rid,
			"HostId":    host,
			"Code":      aerr.code,
			"Message":   aerr.message,
			"Recommend": "https://api.aliyun.com/troubleshoot?q=" + aerr.code + "&product=" + product + "&requestId=" + rid,
		})
		return
	}
	s.opts.Logger.Debug("kms-local call", "action", c.action, "status", http.StatusOK, "requestId", rid)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp)
}

// handle runs the protocol checks and the action; it returns the JSON body of
// a successful response.
func (s *Server) handle(c *call, r *http.Request) ([]byte, *apiError) {
	if r.URL.Path != "/" && r.URL.Path != "" {
		return nil, errActionNotFound()
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, newAPIError(http.StatusForbidden, CodeUnsupportedHTTPMethod, "This http method is not supported.")
	}
	p, aerr := readParams(r)
	c.p = p
	c.action, c.version = p["Action"], p["Version"]
	if c.action != "" {
		s.countCall(c.action)
	}
	if aerr != nil {
		return nil, aerr
	}
	if c.action == "" {
		return nil, errMissingParameter("Action")
	}
	if c.version == "" {
		return nil, errMissingParameter("Version")
	}
	if f := p["Format"]; f != "" && !strings.EqualFold(f, "JSON") {
		return nil, newAPIError(http.StatusBadRequest, CodeInvalidFormat, "Specified parameter Format is not valid.")
	}
	var h handler
	switch c.version {
	case kmsVersion:
		h = kmsActions[c.action]
	case trailVersion:
		h = trailActions[c.action]
	default:
		return nil, errActionOrVersion()
	}
	if h == nil {
		return nil, errActionNotFound()
	}
	cred, aerr := s.authenticate(r.Method, p, c.now)
	if aerr != nil {
		return nil, aerr
	}
	c.cred, c.authed = cred, true
	if _, ok := s.throttled.Load(c.action); ok {
		return nil, newAPIError(http.StatusBadRequest, CodeThrottlingUser, "Request was denied due to user flow control.")
	}

	var out any
	if c.version == kmsVersion {
		out, aerr = s.runKMS(c, h)
	} else {
		out, aerr = h(c)
	}
	if aerr != nil {
		return nil, aerr
	}
	body, err := withRequestID(out, c.requestID)
	if err != nil {
		s.opts.Logger.Error("kms-local: encode response", "action", c.action, "err", err)
		return nil, errInternal()
	}
	return body, nil
}

// runKMS runs a KMS action under the state lock, after applying what time has
// made due, and persists any change before the answer is given.
func (s *Server) runKMS(c *call, h handler) (any, *apiError) {
	s.mu.Lock()
	changed, rotated, err := s.applySchedulesLocked(c.now)
	var out any
	var aerr *apiError
	if err != nil {
		s.opts.Logger.Error("kms-local: evaluate schedules", "err", err)
		aerr = errInternal()
	} else {
		out, aerr = h(c)
	}
	if changed || c.dirty {
		if err := saveState(s.opts.StatePath, s.st); err != nil {
			s.opts.Logger.Error("kms-local: persist state", "err", err)
			if aerr == nil {
				out, aerr = nil, errInternal()
			}
		}
	}
	s.mu.Unlock()
	s.emitRotationRecords(rotated)
	return out, aerr
}

// withRequestID encodes a response object and adds its RequestId.
func withRequestID(out any, rid string) ([]byte, error) {
	fields := map[string]json.RawMessage{}
	if out != nil {
		raw, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("encode response: %w", err)
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, fmt.Errorf("encode response: %w", err)
		}
	}
	id, err := json.Marshal(rid)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	fields["RequestId"] = id
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return body, nil
}

// recordFor builds the ActionTrail record of a finished call.
func (s *Server) recordFor(c *call, r *http.Request, host string, aerr *apiError) Record {
	service, apiVersion := "Kms", kmsVersion
	if c.version == trailVersion {
		service, apiVersion = "Actiontrail", trailVersion
	} else if c.version != "" {
		apiVersion = c.version
	}
	ip := r.RemoteAddr
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	rec := Record{
		EventID:           c.requestID,
		EventVersion:      "1",
		EventSource:       host,
		EventName:         c.action,
		EventType:         "ApiCall",
		EventRW:           eventRW(c.action),
		EventTime:         formatTime(c.now),
		AcsRegion:         s.opts.Region,
		ServiceName:       service,
		APIVersion:        apiVersion,
		RequestID:         c.requestID,
		RequestParameters: requestParameters(c.p),
		ResponseElements:  c.elements,
		SourceIPAddress:   ip,
		UserAgent:         r.UserAgent(),
		at:                c.now,
	}
	if c.resourceID != "" {
		rec.ResourceType, rec.ResourceName = resourceTypeKey, c.resourceID
	}
	if c.authed {
		rec.UserIdentity = userIdentityFor(c.cred, c.now)
	} else {
		rec.UserIdentity = UserIdentity{AccessKeyID: c.p["AccessKeyId"]}
	}
	if aerr != nil {
		rec.ErrorCode, rec.ErrorMessage = aerr.code, aerr.message
		rec.ResponseElements = nil
	}
	return rec
}

// addRecord appends a record to the in-memory trail and hands it to OnRecord.
func (s *Server) addRecord(rec Record) {
	s.recMu.Lock()
	s.nextSeq++
	rec.seq = s.nextSeq
	s.records = append(s.records, rec)
	if limit := s.opts.RecordLimit; len(s.records) >= 2*limit {
		// Compact only when twice over the limit, so trimming costs O(1) per
		// record; keptLocked hides the excess meanwhile.
		s.records = append(s.records[:0:0], s.records[len(s.records)-limit:]...)
	}
	s.recMu.Unlock()
	if s.opts.OnRecord != nil {
		s.opts.OnRecord(cloneRecord(rec))
	}
}

func cloneRecord(r Record) Record {
	r.RequestParameters = maps.Clone(r.RequestParameters)
	r.ResponseElements = maps.Clone(r.ResponseElements)
	if r.UserIdentity.SessionContext != nil {
		sc := *r.UserIdentity.SessionContext
		r.UserIdentity.SessionContext = &sc
	}
	return r
}

// keptLocked returns the last Options.RecordLimit records. s.recMu must be held.
func (s *Server) keptLocked() []Record {
	if over := len(s.records) - s.opts.RecordLimit; over > 0 {
		return s.records[over:]
	}
	return s.records
}

// Records returns a copy of the last Options.RecordLimit records, oldest first.
func (s *Server) Records() []Record {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	kept := s.keptLocked()
	out := make([]Record, len(kept))
	for i, r := range kept {
		out[i] = cloneRecord(r)
	}
	return out
}

func (s *Server) countCall(action string) {
	s.countMu.RLock()
	n, ok := s.counts[action]
	s.countMu.RUnlock()
	if !ok {
		s.countMu.Lock()
		n, ok = s.counts[action]
		if !ok {
			if len(s.counts) >= maxCountedActions {
				s.countMu.Unlock()
				return
			}
			n = new(atomic.Int64)
			s.counts[action] = n
		}
		s.countMu.Unlock()
	}
	n.Add(1)
}

// Calls returns how many requests named action have been received, whatever
// their outcome.
func (s *Server) Calls(action string) int64 {
	s.countMu.RLock()
	defer s.countMu.RUnlock()
	if n, ok := s.counts[action]; ok {
		return n.Load()
	}
	return 0
}

// CallCounts returns a snapshot of all per-action counters.
func (s *Server) CallCounts() map[string]int64 {
	s.countMu.RLock()
	defer s.countMu.RUnlock()
	out := make(map[string]int64, len(s.counts))
	for k, v := range s.counts {
		out[k] = v.Load()
	}
	return out
}

// Stats is the body served at StatsPath.
type Stats struct {
	// Calls are the per-action counters.
	Calls map[string]int64 `json:"calls"`
	// Records is how many ActionTrail records are held in memory.
	Records int `json:"records"`
	// Keys is how many keys exist.
	Keys int `json:"keys"`
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	keys := len(s.st.Keys)
	s.mu.Unlock()
	s.recMu.Lock()
	recs := len(s.keptLocked())
	s.recMu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Stats{Calls: s.CallCounts(), Records: recs, Keys: keys})
}

// EnsureKey returns the ID of the key bound to alias ("alias/<name>"),
// creating an Aliyun_AES_256 key and the alias first if the alias does not
// exist. created reports whether a key was made. It records no ActionTrail
// event: it is the operator's bootstrap, not an API call.
func (s *Server) EnsureKey(alias string) (keyID string, created bool, err error) {
	if !validAliasName(alias) {
		return "", false, errors.New("ensure key: alias must look like alias/<name>")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.st.Aliases[alias]; ok && s.st.key(id) != nil {
		return id, false, nil
	}
	k, err := s.newKeyLocked(s.opts.Clock.Now(), newKeyInput{
		description: "created by kms-local",
		spec:        "Aliyun_AES_256",
		protection:  "SOFTWARE",
		creator:     s.opts.AccountID,
	})
	if err != nil {
		return "", false, fmt.Errorf("ensure key: %w", err)
	}
	s.st.Aliases[alias] = k.ID
	if err := saveState(s.opts.StatePath, s.st); err != nil {
		return "", false, fmt.Errorf("ensure key: %w", err)
	}
	return k.ID, true, nil
}
