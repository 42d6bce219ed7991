package kmsapi

import (
	"strings"
	"time"
)

// Record is one ActionTrail event as ActionTrail delivers it (and as
// EventBridge carries it in a CloudEvent's data). Field names follow the
// ActionTrail event log reference. A Record never holds plaintext, data keys or
// ciphertext blobs.
type Record struct {
	// EventID uniquely identifies the event.
	EventID string `json:"eventId"`
	// EventVersion is always "1".
	EventVersion string `json:"eventVersion"`
	// EventSource is the endpoint host the call was made to.
	EventSource string `json:"eventSource"`
	// EventName is the API action, e.g. "CreateKeyVersion".
	EventName string `json:"eventName"`
	// EventType is "ApiCall", or "AliyunServiceEvent" for automatic rotation.
	EventType string `json:"eventType"`
	// EventRW is "Read" or "Write".
	EventRW string `json:"eventRW"`
	// EventTime is the call time, "2006-01-02T15:04:05Z" in UTC.
	EventTime string `json:"eventTime"`
	// AcsRegion is the server's region.
	AcsRegion string `json:"acsRegion"`
	// ServiceName is "Kms" (or "Actiontrail" for LookupEvents).
	ServiceName string `json:"serviceName"`
	// APIVersion is the Version parameter of the API called.
	APIVersion string `json:"apiVersion"`
	// RequestID is the RequestId answered to the caller.
	RequestID string `json:"requestId"`
	// RequestParameters are the API parameters, without signature fields,
	// SecurityToken, Plaintext and CiphertextBlob.
	RequestParameters map[string]string `json:"requestParameters"`
	// ResponseElements carry identifiers from the response (KeyId,
	// KeyVersionId); never plaintext or blobs.
	ResponseElements map[string]string `json:"responseElements,omitempty"`
	// ResourceType is "ACS::KMS::Key" when the call concerned a key.
	ResourceType string `json:"resourceType,omitempty"`
	// ResourceName is the resolved key ID the call concerned.
	ResourceName string `json:"resourceName,omitempty"`
	// ErrorCode is set when the call failed.
	ErrorCode string `json:"errorCode,omitempty"`
	// ErrorMessage is set when the call failed.
	ErrorMessage string `json:"errorMessage,omitempty"`
	// SourceIPAddress is the caller's IP address.
	SourceIPAddress string `json:"sourceIpAddress"`
	// UserAgent is the caller's User-Agent header.
	UserAgent string `json:"userAgent"`
	// IsGlobal is false: KMS events are regional.
	IsGlobal bool `json:"isGlobal"`
	// UserIdentity is who made the call.
	UserIdentity UserIdentity `json:"userIdentity"`

	seq uint64    // position in the server's log; orders LookupEvents
	at  time.Time // EventTime as a time, for LookupEvents range queries
}

// UserIdentity is the userIdentity of a Record.
type UserIdentity struct {
	// Type is root-account, ram-user, assumed-role or system.
	Type string `json:"type"`
	// AccountID is the caller's account UID.
	AccountID string `json:"accountId,omitempty"`
	// PrincipalID is the caller's principal ID.
	PrincipalID string `json:"principalId,omitempty"`
	// UserName is the caller's name.
	UserName string `json:"userName,omitempty"`
	// AccessKeyID is the AccessKeyId the request was signed with.
	AccessKeyID string `json:"accessKeyId,omitempty"`
	// SessionContext is set for assumed roles.
	SessionContext *SessionContext `json:"sessionContext,omitempty"`
}

// SessionContext describes the STS session of an assumed-role caller.
type SessionContext struct {
	// Attributes describe the session.
	Attributes SessionAttributes `json:"attributes"`
	// SessionIssuer is the RAM role that was assumed.
	SessionIssuer SessionIssuer `json:"sessionIssuer"`
}

// SessionAttributes are the attributes of an STS session.
type SessionAttributes struct {
	// CreationDate is when the session was created (ISO 8601 UTC).
	CreationDate string `json:"creationDate"`
	// MfaAuthenticated is "true" or "false".
	MfaAuthenticated string `json:"mfaAuthenticated"`
}

// SessionIssuer is the RAM role behind an assumed-role session.
type SessionIssuer struct {
	// Type is "role".
	Type string `json:"type"`
	// PrincipalID is the role's principal ID.
	PrincipalID string `json:"principalId,omitempty"`
	// Arn is "acs:ram::<account>:role/<name>".
	Arn string `json:"arn"`
	// AccountID is the role's account UID.
	AccountID string `json:"accountId"`
	// UserName is the role name.
	UserName string `json:"userName"`
}

// eventRW classifies an action the way ActionTrail does for KMS.
func eventRW(action string) string {
	switch {
	case strings.HasPrefix(action, "Describe"), strings.HasPrefix(action, "List"),
		strings.HasPrefix(action, "Lookup"), strings.HasPrefix(action, "Get"),
		action == "Encrypt", action == "Decrypt", action == "GenerateDataKey":
		return "Read"
	default:
		return "Write"
	}
}

// userIdentityFor builds the userIdentity of a call authenticated with cred.
func userIdentityFor(cred Credential, now time.Time) UserIdentity {
	id := cred.Identity
	ui := UserIdentity{
		Type:        id.Type,
		AccountID:   id.AccountID,
		PrincipalID: id.PrincipalID,
		UserName:    id.UserName,
		AccessKeyID: cred.AccessKeyID,
	}
	if id.Type == IdentityAssumedRole {
		if ui.UserName == "" {
			ui.UserName = id.RoleName + ":" + id.SessionName
		}
		ui.SessionContext = &SessionContext{
			Attributes: SessionAttributes{CreationDate: formatTime(now), MfaAuthenticated: "false"},
			SessionIssuer: SessionIssuer{
				Type:        "role",
				PrincipalID: id.RoleID,
				Arn:         "acs:ram::" + id.AccountID + ":role/" + strings.ToLower(id.RoleName),
				AccountID:   id.AccountID,
				UserName:    id.RoleName,
			},
		}
	}
	return ui
}

// requestParameters copies the API parameters of a call into a Record,
// dropping the protocol fields and anything that could carry plaintext or key
// material.
func requestParameters(p params) map[string]string {
	out := make(map[string]string, len(p))
	for k, v := range p {
		if _, skip := unrecordedParams[k]; skip {
			continue
		}
		out[k] = v
	}
	return out
}

var unrecordedParams = map[string]struct{}{
	"Action": {}, "Version": {}, "Format": {}, "AccessKeyId": {}, "Signature": {},
	"SignatureMethod": {}, "SignatureVersion": {}, "SignatureNonce": {}, "SignatureType": {},
	"Timestamp": {}, "SecurityToken": {}, "BearerToken": {}, "RegionId": {},
	"Plaintext": {}, "CiphertextBlob": {},
}
