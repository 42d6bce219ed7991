package kmsapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// percentEncode is the RPC signature encoding (RFC 3986 unreserved characters
// kept, everything else %XX in upper case, space as %20), which is what the SDK
// produces from url.QueryEscape plus its three replacements.
func percentEncode(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "+", "%20")
	e = strings.ReplaceAll(e, "*", "%2A")
	e = strings.ReplaceAll(e, "%7E", "~")
	return e
}

// stringToSign builds the RPC string to sign: METHOD&%2F&percentEncode(the
// sorted, encoded parameters without Signature).
func stringToSign(method string, p params) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(percentEncode(k))
		b.WriteByte('=')
		b.WriteString(percentEncode(p[k]))
	}
	return method + "&" + percentEncode("/") + "&" + percentEncode(b.String())
}

// sign returns base64(HMAC-SHA1(secret+"&", stringToSign)).
func sign(secret, toSign string) []byte {
	mac := hmac.New(sha1.New, []byte(secret+"&"))
	mac.Write([]byte(toSign))
	return mac.Sum(nil)
}

// authenticate checks the common protocol parameters and the signature of a
// call and returns the credential it was made with. The order of checks
// follows the gateway: protocol parameters, AccessKey, STS token, signature,
// timestamp window.
func (s *Server) authenticate(method string, p params, now time.Time) (Credential, *apiError) {
	akID, aerr := p.required("AccessKeyId")
	if aerr != nil {
		return Credential{}, aerr
	}
	sig, aerr := p.required("Signature")
	if aerr != nil {
		return Credential{}, aerr
	}
	if m := p["SignatureMethod"]; m != "HMAC-SHA1" {
		return Credential{}, newAPIError(http.StatusBadRequest, CodeInvalidSignatureMethod,
			"Specified signature method is not supported.")
	}
	if v := p["SignatureVersion"]; v != "1.0" {
		return Credential{}, errInvalidParameter("SignatureVersion")
	}
	if _, aerr := p.required("SignatureNonce"); aerr != nil {
		return Credential{}, aerr
	}
	ts := p["Timestamp"]
	if ts == "" {
		return Credential{}, newAPIError(http.StatusBadRequest, CodeIllegalTimestamp,
			`The input parameter "Timestamp" that is mandatory for processing this request is not supplied.`)
	}
	sent, err := time.Parse(timeLayout, ts)
	if err != nil {
		return Credential{}, newAPIError(http.StatusBadRequest, CodeTimestampFormat,
			"Specified time stamp or date value is not well formatted.")
	}

	cred, ok := s.creds[akID]
	if !ok {
		return Credential{}, newAPIError(http.StatusNotFound, CodeAccessKeyNotFound,
			"Specified access key is not found.")
	}
	if cred.SecurityToken != "" {
		token := p["SecurityToken"]
		switch {
		case token == "":
			return Credential{}, newAPIError(http.StatusBadRequest, CodeMissingSecurityToken,
				"SecurityToken is mandatory for this action.")
		case subtle.ConstantTimeCompare([]byte(token), []byte(cred.SecurityToken)) != 1:
			return Credential{}, newAPIError(http.StatusBadRequest, CodeSecurityTokenMismatch,
				"Specified SecurityToken mismatch with the AccessKey.")
		case !cred.Expiration.IsZero() && !now.Before(cred.Expiration):
			return Credential{}, newAPIError(http.StatusForbidden, CodeSecurityTokenExpired,
				"Specified SecurityToken is expired.")
		}
	}

	toSign := stringToSign(method, p)
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(got) != sha1.Size {
		return Credential{}, newAPIError(http.StatusBadRequest, CodeIncompleteSignature,
			"The request signature does not conform to Aliyun standards. server string to sign is:"+toSign)
	}
	if !hmac.Equal(got, sign(cred.AccessKeySecret, toSign)) {
		// The SDK compares the server's string to sign with its own and, when
		// they agree, recommends checking the AccessKeySecret.
		return Credential{}, newAPIError(http.StatusBadRequest, CodeSignatureDoesNotMatch,
			"Specified signature is not matched with our calculation. server string to sign is:"+toSign)
	}

	if s.opts.MaxClockSkew > 0 {
		if d := now.Sub(sent); d > s.opts.MaxClockSkew || d < -s.opts.MaxClockSkew {
			return Credential{}, newAPIError(http.StatusBadRequest, CodeTimestampExpired,
				"Specified time stamp or date value is expired.")
		}
	}
	return cred, nil
}
