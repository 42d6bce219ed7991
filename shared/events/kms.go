package events

import (
	"github.com/rekey-dev/rekey/shared/actiontrail"
)

// SourceKMS is the EventBridge source of KMS events.
const SourceKMS = "acs.kms"

// KMS API names (ActionTrail eventName) that matter to key rotation.
const (
	KMSCreateKeyVersion     = "CreateKeyVersion"
	KMSUpdateRotationPolicy = "UpdateRotationPolicy"
	KMSDisableKey           = "DisableKey"
	KMSEnableKey            = "EnableKey"
	KMSScheduleKeyDeletion  = "ScheduleKeyDeletion"
	KMSCancelKeyDeletion    = "CancelKeyDeletion"
	KMSDeleteKeyMaterial    = "DeleteKeyMaterial"
)

// KMSTypes are the EventBridge types of acs.kms ActionTrail events.
var KMSTypes = []string{
	"kms:ActionTrail:" + ActionTrailAPICall,
	"kms:ActionTrail:" + ActionTrailConsoleOperation,
	"kms:ActionTrail:" + ActionTrailAliyunServiceEvent,
}

// KMSKeyID returns the KeyId request parameter of a KMS record as sent: a key ID, "alias/<name>" or an
// ARN ("" when absent). Parse it with shared/keyref.
func KMSKeyID(rec actiontrail.Event) string { return rec.Param("KeyId") }

// KMSNewKeyVersion returns the version a CreateKeyVersion created, from the record's responseElements
// ({"KeyVersion":{"KeyVersionId":...}} as the API answers, or a flat KeyVersionId); "" when the record
// does not carry it (whether ActionTrail keeps responseElements for KMS is UNCONFIRMED).
func KMSNewKeyVersion(rec actiontrail.Event) string {
	if kv, ok := rec.ResponseElements["KeyVersion"].(map[string]any); ok {
		if id, ok := kv["KeyVersionId"].(string); ok {
			return id
		}
	}
	if id, ok := rec.ResponseElements["KeyVersionId"].(string); ok {
		return id
	}
	return ""
}
