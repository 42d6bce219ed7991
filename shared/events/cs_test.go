package events

import (
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

func TestCSClusterID(t *testing.T) {
	const id = "c0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name    string
		rec     actiontrail.Event
		want    string
		wantErr string
	}{
		{name: "ClusterId param", rec: actiontrail.Event{RequestParameters: map[string]any{"ClusterId": id}}, want: id},
		{name: "cluster_id param", rec: actiontrail.Event{RequestParameters: map[string]any{"cluster_id": id}}, want: id},
		{name: "path param", rec: actiontrail.Event{RequestParameters: map[string]any{"RequestPath": "/clusters/" + id + "/kms"}}, want: id},
		{name: "path with query", rec: actiontrail.Event{RequestParameters: map[string]any{"uri": "/clusters/" + id + "/kms?x=1"}}, want: id},
		{name: "param and path agree", rec: actiontrail.Event{RequestParameters: map[string]any{"ClusterId": id, "path": "/clusters/" + id + "/kms"}}, want: id},
		{name: "resourceName", rec: actiontrail.Event{ResourceName: id}, want: id},
		{name: "param wins over resourceName", rec: actiontrail.Event{ResourceName: "other", RequestParameters: map[string]any{"ClusterId": id}}, want: id},
		{name: "none", rec: actiontrail.Event{EventID: "e1"}, wantErr: "no cluster ID"},
		{name: "other path", rec: actiontrail.Event{RequestParameters: map[string]any{"path": "/clusters/" + id + "/nodes"}}, wantErr: "no cluster ID"},
		{name: "conflict", rec: actiontrail.Event{RequestParameters: map[string]any{"ClusterId": "a", "path": "/clusters/b/kms"}}, wantErr: "conflicting cluster IDs: requestParameters.ClusterId=a, requestParameters.path=b"},
		{name: "resourceName not an id", rec: actiontrail.Event{ResourceName: "ACS::CS::Cluster/x y"}, wantErr: "no cluster ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CSClusterID(tc.rec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("CSClusterID = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCSKMSEncryption(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   KMSEncryption
	}{
		{"top level", map[string]any{"kms_key_id": "k", "disable_encryption": false}, KMSEncryption{KeyID: "k"}},
		{"body object", map[string]any{"body": map[string]any{"kms_key_id": "k", "disable_encryption": true}}, KMSEncryption{KeyID: "k", Disable: true}},
		{"body string", map[string]any{"body": `{"kms_key_id":"k","disable_encryption":"true"}`}, KMSEncryption{KeyID: "k", Disable: true}},
		{"camel case", map[string]any{"KmsKeyId": "k", "DisableEncryption": "false"}, KMSEncryption{KeyID: "k"}},
		{"nothing", nil, KMSEncryption{}},
	} {
		if got := CSKMSEncryption(actiontrail.Event{RequestParameters: tc.params}); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestKMSNewKeyVersion(t *testing.T) {
	for _, tc := range []struct {
		resp map[string]any
		want string
	}{
		{map[string]any{"KeyVersion": map[string]any{"KeyVersionId": "v2"}}, "v2"},
		{map[string]any{"KeyVersionId": "v3"}, "v3"},
		{map[string]any{"KeyVersion": "v4"}, ""},
		{nil, ""},
	} {
		if got := KMSNewKeyVersion(actiontrail.Event{ResponseElements: tc.resp}); got != tc.want {
			t.Errorf("KMSNewKeyVersion(%v) = %q, want %q", tc.resp, got, tc.want)
		}
	}
}
