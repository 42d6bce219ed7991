package actiontrail

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event types ActionTrail records.
const (
	TypeAPICall            = "ApiCall"
	TypeConsoleOperation   = "ConsoleOperation"
	TypeAliyunServiceEvent = "AliyunServiceEvent"
)

// Event is one ActionTrail record. Unknown fields are ignored; parameters keep their JSON types.
type Event struct {
	EventID           string         `json:"eventId"`
	EventVersion      string         `json:"eventVersion,omitempty"`
	EventSource       string         `json:"eventSource,omitempty"`
	EventName         string         `json:"eventName"`
	EventType         string         `json:"eventType,omitempty"`
	EventRW           string         `json:"eventRW,omitempty"`
	EventTime         string         `json:"eventTime"`
	AcsRegion         string         `json:"acsRegion,omitempty"`
	ServiceName       string         `json:"serviceName,omitempty"`
	APIVersion        string         `json:"apiVersion,omitempty"`
	RequestID         string         `json:"requestId,omitempty"`
	RequestParameters map[string]any `json:"requestParameters,omitempty"`
	ResponseElements  map[string]any `json:"responseElements,omitempty"`
	ResourceName      string         `json:"resourceName,omitempty"`
	ErrorCode         string         `json:"errorCode,omitempty"`
	ErrorMessage      string         `json:"errorMessage,omitempty"`
	SourceIPAddress   string         `json:"sourceIpAddress,omitempty"`
	UserAgent         string         `json:"userAgent,omitempty"`
	UserIdentity      Identity       `json:"userIdentity"`
}

// Identity is who made a call.
type Identity struct {
	// Type is root-account, ram-user, assumed-role, system, ...
	Type        string          `json:"type"`
	AccountID   string          `json:"accountId,omitempty"`
	PrincipalID string          `json:"principalId,omitempty"`
	UserName    string          `json:"userName,omitempty"`
	AccessKeyID string          `json:"accessKeyId,omitempty"`
	Session     *SessionContext `json:"sessionContext,omitempty"`
}

// SessionContext describes an assumed-role session.
type SessionContext struct {
	SessionIssuer struct {
		Type     string `json:"type"`
		Arn      string `json:"arn"`
		UserName string `json:"userName"`
	} `json:"sessionIssuer"`
}

// RoleName returns the assumed role's name ("" when the caller did not assume a role). ActionTrail
// puts it in sessionContext.sessionIssuer.userName, and the principal of an assumed role is
// "<roleId>:<sessionName>".
func (i Identity) RoleName() string {
	if i.Type != "assumed-role" || i.Session == nil {
		return ""
	}
	return i.Session.SessionIssuer.UserName
}

// RAMUserName returns the RAM user's name when a RAM user made the call ("" otherwise).
func (i Identity) RAMUserName() string {
	if i.Type != "ram-user" {
		return ""
	}
	return i.UserName
}

// Time parses EventTime.
func (e Event) Time() (time.Time, error) {
	t, err := time.Parse(time.RFC3339, e.EventTime)
	if err != nil {
		return time.Time{}, fmt.Errorf("event %s: eventTime %q: %w", e.EventID, e.EventTime, err)
	}
	return t, nil
}

// Failed reports whether the record describes a call that failed.
func (e Event) Failed() bool { return e.ErrorCode != "" }

// Param returns a request parameter as a string ("" when absent).
func (e Event) Param(name string) string { return stringField(e.RequestParameters, name) }

// Response returns a response element as a string ("" when absent).
func (e Event) Response(name string) string { return stringField(e.ResponseElements, name) }

func stringField(m map[string]any, name string) string {
	switch v := m[name].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Decode parses one ActionTrail record.
func Decode(raw []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return Event{}, fmt.Errorf("decode actiontrail record: %w", err)
	}
	if e.EventName == "" {
		return Event{}, fmt.Errorf("decode actiontrail record %q: eventName is missing", e.EventID)
	}
	return e, nil
}
