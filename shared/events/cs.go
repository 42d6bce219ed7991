package events

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

// SourceCS is the EventBridge source of Container Service (ACK) events.
const SourceCS = "acs.cs"

// CSUpdateKMSEncryption is the ACK API (ROA, PUT /clusters/{ClusterId}/kms) that turns KMS encryption
// of Secrets on or off, or changes its key.
const CSUpdateKMSEncryption = "UpdateKMSEncryption"

// CSTypes are the EventBridge types of acs.cs ActionTrail events rekey listens to.
var CSTypes = []string{"cs:ActionTrail:" + ActionTrailAPICall}

// kmsPath matches the ROA path of UpdateKMSEncryption.
var kmsPath = regexp.MustCompile(`/clusters/([A-Za-z0-9_-]+)/kms(?:[/?]|$)`)

// clusterParams are the request parameter names a ROA record may use for the path's ClusterId. The
// exact shape of a CS record's requestParameters is UNCONFIRMED, so each plausible form is accepted.
var clusterParams = []string{"ClusterId", "clusterId", "cluster_id"}

// CSClusterID returns the cluster an ACK record is about: a ClusterId request parameter, or the
// /clusters/{id}/kms path found in any string request parameter (ROA records may carry the request
// path), or the record's resourceName when it is a bare ID. Different IDs in different places are an
// error, as is finding none.
func CSClusterID(rec actiontrail.Event) (string, error) {
	found := map[string]string{} // id -> where
	for _, name := range clusterParams {
		if v, ok := rec.RequestParameters[name].(string); ok && v != "" {
			found[v] = "requestParameters." + name
		}
	}
	names := make([]string, 0, len(rec.RequestParameters))
	for name := range rec.RequestParameters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if v, ok := rec.RequestParameters[name].(string); ok {
			if m := kmsPath.FindStringSubmatch(v); m != nil {
				found[m[1]] = "requestParameters." + name
			}
		}
	}
	if len(found) == 0 && validClusterID(rec.ResourceName) {
		found[rec.ResourceName] = "resourceName"
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("event %s: no cluster ID (requestParameters.ClusterId or a /clusters/{id}/kms path)", rec.EventID)
	case 1:
		for id := range found {
			return id, nil
		}
	}
	ids := make([]string, 0, len(found))
	for id, where := range found {
		ids = append(ids, where+"="+id)
	}
	sort.Strings(ids)
	return "", fmt.Errorf("event %s: conflicting cluster IDs: %s", rec.EventID, strings.Join(ids, ", "))
}

func validClusterID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// KMSEncryption is the body of an UpdateKMSEncryption call: {"kms_key_id", "disable_encryption"}.
type KMSEncryption struct {
	// KeyID is the key the cluster encrypts Secrets with from now on ("" when not recorded).
	KeyID string
	// Disable is true when the call turned encryption off.
	Disable bool
}

// CSKMSEncryption reads an UpdateKMSEncryption body from a record's request parameters: at the top
// level, or under "body" (an object or a JSON string). Booleans may be recorded as strings.
func CSKMSEncryption(rec actiontrail.Event) KMSEncryption {
	params := rec.RequestParameters
	switch b := params["body"].(type) {
	case map[string]any:
		params = b
	case string:
		var m map[string]any
		if json.Unmarshal([]byte(b), &m) == nil {
			params = m
		}
	}
	var out KMSEncryption
	for _, name := range []string{"kms_key_id", "KmsKeyId"} {
		if v, ok := params[name].(string); ok && v != "" {
			out.KeyID = v
			break
		}
	}
	for _, name := range []string{"disable_encryption", "DisableEncryption"} {
		switch v := params[name].(type) {
		case bool:
			out.Disable = v
		case string:
			out.Disable, _ = strconv.ParseBool(v)
		}
	}
	return out
}
