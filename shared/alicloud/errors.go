package alicloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

// maxMessage bounds the server message kept in an APIError.
const maxMessage = 300

// APIError is an error answer from an Alibaba Cloud API (an SDK *errors.ServerError) with a
// message that is safe to log: one line, bounded, without the string-to-sign the gateway echoes on
// signature errors (it contains the security token), and with the call's references redacted.
// errors.As still finds the SDK's *errors.ServerError through Unwrap.
type APIError struct {
	// Code is the error code, e.g. "Forbidden.KeyNotFound". ROA services (CS) answer with a
	// lower-case "code", which is read too.
	Code string
	// Status is the HTTP status of the answer.
	Status int
	// RequestID identifies the call for Alibaba Cloud support.
	RequestID string
	// Message is the server's message, sanitized.
	Message string

	err *sdkerrors.ServerError
}

// NewAPIError makes the error a service would answer with (for fakes and tests). It wraps a real
// SDK *errors.ServerError, so code helpers treat it like one from the SDK.
func NewAPIError(status int, code, message string) *APIError {
	body, _ := json.Marshal(map[string]string{"Code": code, "Message": message, "RequestId": "fake-request"})
	se, _ := sdkerrors.NewServerError(status, string(body), "").(*sdkerrors.ServerError)
	return newAPIError(se)
}

func newAPIError(se *sdkerrors.ServerError, refs ...string) *APIError {
	e := &APIError{Code: se.ErrorCode(), Status: se.HttpStatus(), RequestID: se.RequestId(), err: se}
	msg := se.Message()
	if e.Code == "" {
		// ROA services use lower-case keys, which the SDK does not read: then Message is the body.
		var body struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal([]byte(msg), &body) == nil && body.Code != "" {
			e.Code, msg = body.Code, body.Message
			if e.RequestID == "" {
				e.RequestID = body.RequestID
			}
		}
	}
	e.Message = sanitizeMessage(msg, refs)
	return e
}

// Error returns "<code> (http <status>): <message> [request <id>]".
func (e *APIError) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteString(" ")
	}
	fmt.Fprintf(&b, "(http %d)", e.Status)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" [request ")
		b.WriteString(e.RequestID)
		b.WriteString("]")
	}
	return b.String()
}

// HttpStatus is the status retry.Classify judges the error by: the server's, except that throttling
// codes count as 429 whatever status carried them (the gateway's "Throttling.*" codes may come with
// 400).
func (e *APIError) HttpStatus() int {
	if IsThrottlingCode(e.Code) && e.Status < http.StatusInternalServerError {
		return http.StatusTooManyRequests
	}
	return e.Status
}

// Unwrap returns the SDK's *errors.ServerError.
func (e *APIError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

// IsThrottlingCode reports whether an error code says a request quota is exhausted.
func IsThrottlingCode(code string) bool {
	return code == "Throttling" || strings.HasPrefix(code, "Throttling.") || strings.HasPrefix(code, "Rejected.Throttling")
}

// ErrorCode returns the error code carried by err (an APIError or an SDK *errors.ServerError
// anywhere in its chain), or "" when there is none.
func ErrorCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		return se.ErrorCode()
	}
	return ""
}

// sanitizeMessage makes a server message fit for logs.
func sanitizeMessage(msg string, refs []string) string {
	if i := strings.Index(strings.ToLower(msg), "string to sign"); i >= 0 {
		msg = msg[:i] + "[string to sign removed]"
	}
	msg = strings.Join(strings.Fields(msg), " ")
	for _, r := range refs {
		if len(r) >= 8 {
			msg = strings.ReplaceAll(msg, r, Redact(r))
		}
	}
	if r := []rune(msg); len(r) > maxMessage {
		msg = string(r[:maxMessage]) + "…"
	}
	return msg
}

// transportError is an HTTP transport failure with the request URL cut to scheme and host: the SDK
// puts every parameter in the query (data, AccessKeyId, SecurityToken, Signature), and *url.Error
// prints the whole URL.
type transportError struct {
	op   string
	host string
	err  error
}

// Error returns "<method> <scheme>://<host>: <cause>".
func (e *transportError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.op, e.host, e.err)
}

// Unwrap returns the transport's error (a timeout, a reset connection...).
func (e *transportError) Unwrap() error { return e.err }

// Timeout reports whether the failure was a timeout, as *url.Error does.
func (e *transportError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// Temporary mirrors *url.Error so the value satisfies net.Error.
func (e *transportError) Temporary() bool {
	var t interface{ Temporary() bool }
	return errors.As(e.err, &t) && t.Temporary()
}

// clientError is an SDK *errors.ClientError without its cause's text (a JSON decoding error can
// quote the response body, which may hold a plaintext).
type clientError struct {
	code, message string
	err           *sdkerrors.ClientError
}

// Error returns the SDK's code and message, without the cause.
func (e *clientError) Error() string {
	return fmt.Sprintf("sdk %s: %s", e.code, strings.Join(strings.Fields(e.message), " "))
}

// Unwrap returns the SDK's *errors.ClientError.
func (e *clientError) Unwrap() error { return e.err }

// HttpStatus keeps the SDK's classification of client errors (400: permanent).
func (e *clientError) HttpStatus() int { return e.err.HttpStatus() }

// Sanitize turns an SDK error into one that is safe to print: an *APIError for a server answer, a
// transport error naming only scheme and host (product when the URL cannot be parsed) for an
// *url.Error, the code and message of an SDK client error without its cause. refs are references
// of the call (key IDs...), redacted if the server message repeats them. Other errors are
// returned as they are.
func Sanitize(err error, product string, refs ...string) error {
	if err == nil {
		return nil
	}
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		return newAPIError(se, refs...)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		host := product
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			host = u.Scheme + "://" + u.Host
		}
		return &transportError{op: ue.Op, host: host, err: ue.Err}
	}
	var ce *sdkerrors.ClientError
	if errors.As(err, &ce) {
		return &clientError{code: ce.ErrorCode(), message: ce.Message(), err: ce}
	}
	return err
}
