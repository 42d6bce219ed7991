package kmsapi

import (
	"errors"
	"fmt"
	"k8s.io/utils/clock"
	"log/slog"
	"time"
)

// Identity types accepted in Identity.Type; they are the ActionTrail
// userIdentity.type values for API callers.
const (
	// IdentityRootAccount is an Alibaba Cloud account's own AccessKey.
	IdentityRootAccount = "root-account"
	// IdentityRAMUser is a RAM user's AccessKey.
	IdentityRAMUser = "ram-user"
	// IdentityAssumedRole is an STS credential obtained by assuming a RAM role.
	IdentityAssumedRole = "assumed-role"
)

// Identity is who a Credential authenticates as. It is copied into the
// userIdentity of every ActionTrail Record the credential produces.
type Identity struct {
	// Type is IdentityRootAccount, IdentityRAMUser or IdentityAssumedRole.
	Type string `json:"type"`
	// AccountID is the Alibaba Cloud account UID; it also becomes the Creator
	// of keys the identity creates.
	AccountID string `json:"accountId"`
	// PrincipalID is the RAM principal ID (for an assumed role conventionally
	// "<roleId>:<sessionName>").
	PrincipalID string `json:"principalId,omitempty"`
	// UserName is the caller's name; for an assumed role it defaults to
	// "<RoleName>:<SessionName>".
	UserName string `json:"userName,omitempty"`
	// RoleName is the assumed RAM role, e.g. "aliyuncsmanagedsecurityrole".
	RoleName string `json:"roleName,omitempty"`
	// RoleID is the RAM role's principal ID, reported as the session issuer.
	RoleID string `json:"roleId,omitempty"`
	// SessionName is the role session name.
	SessionName string `json:"sessionName,omitempty"`
}

// Credential is an AccessKey pair the server accepts.
type Credential struct {
	// AccessKeyID is the AccessKeyId request parameter (an STS key
	// conventionally starts with "STS.").
	AccessKeyID string `json:"accessKeyId"`
	// AccessKeySecret signs requests (the HMAC key is AccessKeySecret+"&").
	AccessKeySecret string `json:"accessKeySecret"`
	// SecurityToken, when set, must accompany every request made with this
	// AccessKey.
	SecurityToken string `json:"securityToken,omitempty"`
	// Expiration, when set, is the instant after which an STS credential is
	// refused with CodeSecurityTokenExpired (judged by Options.Clock).
	Expiration time.Time `json:"expiration,omitzero"`
	// Identity is who the credential authenticates as.
	Identity Identity `json:"identity"`
}

// DevCredential returns the fixed root-account credential kms-local falls
// back to when it is given no credentials file. It is for local use only.
func DevCredential() Credential {
	return Credential{
		AccessKeyID:     "LTAIkmslocaldev",
		AccessKeySecret: "kms-local-dev-secret",
		Identity: Identity{
			Type:        IdentityRootAccount,
			AccountID:   DefaultAccountID,
			PrincipalID: DefaultAccountID,
			UserName:    "root",
		},
	}
}

// Defaults applied by NewServer to zero Options fields.
const (
	// DefaultRegion is the region used when Options.Region is empty.
	DefaultRegion = "cn-hangzhou"
	// DefaultAccountID owns keys and ARNs when Options.AccountID is empty.
	DefaultAccountID = "1234567890123456"
	// DefaultRecordLimit is the number of Records kept when Options.RecordLimit is 0.
	DefaultRecordLimit = 10000
	// DefaultRotationCheckInterval is Run's period when Options.RotationCheckInterval is 0.
	DefaultRotationCheckInterval = time.Minute
)

// Options configures a Server. The zero value is usable apart from
// Credentials: a server without credentials refuses every call.
type Options struct {
	// Region is the server's region, used in ARNs and Records.
	Region string
	// AccountID owns the keys and appears in their ARNs.
	AccountID string
	// Credentials are the AccessKey pairs the server accepts.
	Credentials []Credential
	// StatePath is the JSON file the state is loaded from and saved to after
	// every mutation. Empty keeps the state in memory only.
	StatePath string
	// Clock gives the current time; nil means the real clock. Rotation, deletion
	// windows, STS expiry, timestamps and Records all read it.
	Clock clock.PassiveClock
	// MinVersionInterval, when positive, refuses CreateKeyVersion within that
	// long of the key's last rotation (the classic KMS documented seven days
	// for CMKs). Zero disables the check.
	MinVersionInterval time.Duration
	// MaxClockSkew, when positive, refuses requests whose Timestamp differs
	// from Clock() by more than this (the real gateway allows 15 minutes).
	// Zero disables the check, which suits tests that move a fake clock.
	MaxClockSkew time.Duration
	// RotationCheckInterval is how often Run evaluates rotation and deletion.
	RotationCheckInterval time.Duration
	// RecordLimit is how many ActionTrail Records are kept in memory (and
	// searchable with LookupEvents).
	RecordLimit int
	// OnRecord, when set, is called synchronously with every Record before the
	// response is written. It must return quickly and must not call the Server.
	OnRecord func(Record)
	// EventSource, when set, is the Record eventSource and the error HostId;
	// by default the request's Host is used.
	EventSource string
	// AutoRotationEventName, when set, makes every automatic rotation produce
	// a Record with eventType "AliyunServiceEvent" and this eventName. Whether
	// real KMS emits such an event is unconfirmed, so the default is none.
	AutoRotationEventName string
	// Logger receives one debug line per call (action, code, status, request
	// ID; never parameters). Nil discards.
	Logger *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.AccountID == "" {
		o.AccountID = DefaultAccountID
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.RecordLimit <= 0 {
		o.RecordLimit = DefaultRecordLimit
	}
	if o.RotationCheckInterval <= 0 {
		o.RotationCheckInterval = DefaultRotationCheckInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func validateCredentials(creds []Credential) (map[string]Credential, error) {
	byID := make(map[string]Credential, len(creds))
	for i, c := range creds {
		if c.AccessKeyID == "" || c.AccessKeySecret == "" {
			return nil, fmt.Errorf("credential %d: accessKeyId and accessKeySecret are required", i)
		}
		if _, dup := byID[c.AccessKeyID]; dup {
			return nil, fmt.Errorf("credential %d: duplicate accessKeyId", i)
		}
		switch c.Identity.Type {
		case IdentityRootAccount, IdentityRAMUser:
		case IdentityAssumedRole:
			if c.Identity.RoleName == "" {
				return nil, fmt.Errorf("credential %d: an assumed-role identity needs roleName", i)
			}
			if c.SecurityToken == "" {
				return nil, fmt.Errorf("credential %d: an assumed-role identity needs securityToken", i)
			}
		default:
			return nil, fmt.Errorf("credential %d: identity type %q: %w", i, c.Identity.Type, errUnknownIdentityType)
		}
		if c.Identity.AccountID == "" {
			return nil, fmt.Errorf("credential %d: identity accountId is required", i)
		}
		byID[c.AccessKeyID] = c
	}
	return byID, nil
}

var errUnknownIdentityType = errors.New("want root-account, ram-user or assumed-role")
