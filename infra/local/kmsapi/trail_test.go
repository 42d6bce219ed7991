package kmsapi_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/actiontrail"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

func TestRecordsDescribeEveryCall(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, stsCred)
	md := createKey(t, c, nil)
	const secret = "the quick brown fox is a secret"
	pt := base64.StdEncoding.EncodeToString([]byte(secret))
	enc, err := encrypt(c, md.KeyId, pt, `{"purpose":"test"}`)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	dec, err := decrypt(c, enc.CiphertextBlob, `{"purpose":"test"}`)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	gdk := kms.CreateGenerateDataKeyRequest()
	gdk.KeyId = md.KeyId
	dk, err := c.GenerateDataKey(gdk)
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	dkRaw, _ := base64.StdEncoding.DecodeString(dk.Plaintext)
	_, failErr := encrypt(c, "alias/missing", pt, "")
	wantServerError(t, failErr, kmsapi.CodeAliasNotFound, http.StatusNotFound)

	recs := e.records()
	if len(recs) != 5 {
		t.Fatalf("OnRecord saw %d records, want 5", len(recs))
	}
	kept := e.srv.Records()
	for i := range recs {
		if kept[i].EventID != recs[i].EventID {
			t.Fatalf("Records()[%d] = %s, OnRecord saw %s", i, kept[i].EventID, recs[i].EventID)
		}
	}

	wantUser := kmsapi.UserIdentity{
		Type:        "assumed-role",
		AccountID:   testAccount,
		PrincipalID: stsCred.Identity.PrincipalID,
		UserName:    "aliyuncsmanagedsecurityrole:rekey",
		AccessKeyID: stsCred.AccessKeyID,
	}
	for _, tc := range []struct {
		i                int
		name, rw, rid    string
		params, elements map[string]string
		errorCode        string
		resourceName     string
	}{
		{i: 0, name: "CreateKey", rw: "Write", params: map[string]string{"Description": "rekey test key"},
			elements: map[string]string{"KeyId": md.KeyId, "KeyVersionId": md.PrimaryKeyVersion}, resourceName: md.KeyId},
		{i: 1, name: "Encrypt", rw: "Read", rid: enc.RequestId,
			params:   map[string]string{"KeyId": md.KeyId, "EncryptionContext": `{"purpose":"test"}`},
			elements: map[string]string{"KeyId": md.KeyId, "KeyVersionId": enc.KeyVersionId}, resourceName: md.KeyId},
		{i: 2, name: "Decrypt", rw: "Read", rid: dec.RequestId,
			params:   map[string]string{"EncryptionContext": `{"purpose":"test"}`},
			elements: map[string]string{"KeyId": md.KeyId, "KeyVersionId": dec.KeyVersionId}, resourceName: md.KeyId},
		{i: 3, name: "GenerateDataKey", rw: "Read", rid: dk.RequestId, params: map[string]string{"KeyId": md.KeyId},
			elements: map[string]string{"KeyId": md.KeyId, "KeyVersionId": dk.KeyVersionId}, resourceName: md.KeyId},
		{i: 4, name: "Encrypt", rw: "Read", params: map[string]string{"KeyId": "alias/missing"},
			errorCode: kmsapi.CodeAliasNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recs[tc.i]
			if r.EventName != tc.name || r.EventRW != tc.rw || r.EventType != "ApiCall" || r.EventVersion != "1" ||
				r.ServiceName != "Kms" || r.APIVersion != "2016-01-20" || r.AcsRegion != testRegion ||
				r.EventSource != e.host() || r.EventTime != e.clock.Now().Format(iso) || r.IsGlobal ||
				r.SourceIPAddress != "127.0.0.1" || !strings.Contains(r.UserAgent, "AlibabaCloud") ||
				r.EventID == "" || r.RequestID == "" {
				t.Fatalf("record header: %+v", r)
			}
			if tc.rid != "" && r.RequestID != tc.rid {
				t.Fatalf("record requestId %s, response RequestId %s", r.RequestID, tc.rid)
			}
			if len(r.RequestParameters) != len(tc.params) {
				t.Fatalf("requestParameters %v, want %v", r.RequestParameters, tc.params)
			}
			for k, v := range tc.params {
				if r.RequestParameters[k] != v {
					t.Fatalf("requestParameters %v, want %v", r.RequestParameters, tc.params)
				}
			}
			if len(r.ResponseElements) != len(tc.elements) {
				t.Fatalf("responseElements %v, want %v", r.ResponseElements, tc.elements)
			}
			for k, v := range tc.elements {
				if r.ResponseElements[k] != v {
					t.Fatalf("responseElements %v, want %v", r.ResponseElements, tc.elements)
				}
			}
			if r.ErrorCode != tc.errorCode || (tc.errorCode != "") != (r.ErrorMessage != "") {
				t.Fatalf("error %q %q, want code %q", r.ErrorCode, r.ErrorMessage, tc.errorCode)
			}
			if r.ResourceName != tc.resourceName || (tc.resourceName != "") != (r.ResourceType == "ACS::KMS::Key") {
				t.Fatalf("resource %q %q, want %q", r.ResourceType, r.ResourceName, tc.resourceName)
			}
			got := r.UserIdentity
			sc := got.SessionContext
			got.SessionContext = nil
			if got != wantUser {
				t.Fatalf("userIdentity %+v, want %+v", got, wantUser)
			}
			if sc == nil || sc.SessionIssuer.UserName != "aliyuncsmanagedsecurityrole" || sc.SessionIssuer.Type != "role" ||
				sc.SessionIssuer.Arn != "acs:ram::"+testAccount+":role/aliyuncsmanagedsecurityrole" ||
				sc.SessionIssuer.PrincipalID != stsCred.Identity.RoleID || sc.Attributes.MfaAuthenticated != "false" {
				t.Fatalf("sessionContext %+v", sc)
			}
		})
	}

	// No record, however serialised, carries plaintext, data keys, blobs or credentials.
	all, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	lookup, err := e.trailClient(t, rootCred).LookupEvents(actiontrail.CreateLookupEventsRequest())
	if err != nil {
		t.Fatalf("LookupEvents: %v", err)
	}
	for name, s := range map[string]string{
		"records":      string(all),
		"LookupEvents": lookup.GetHttpContentString(),
	} {
		for what, needle := range map[string]string{
			"plaintext":              secret,
			"plaintext base64":       pt,
			"data key":               dk.Plaintext,
			"data key bytes":         string(dkRaw),
			"data key base64url":     base64.RawURLEncoding.EncodeToString(dkRaw),
			"encrypt blob":           enc.CiphertextBlob,
			"data key blob":          dk.CiphertextBlob,
			"security token":         stsCred.SecurityToken,
			"access key secret":      stsCred.AccessKeySecret,
			"plaintext param name":   `"Plaintext"`,
			"ciphertext param name":  `"CiphertextBlob"`,
			"signature param name":   `"Signature"`,
			"security token param":   `"SecurityToken"`,
			"blob prefix (30 chars)": enc.CiphertextBlob[:30],
		} {
			if strings.Contains(s, needle) {
				t.Errorf("%s contain the %s", name, what)
			}
		}
	}
}

func TestLookupEvents(t *testing.T) {
	e := newEnv(t, nil)
	root := e.client(t, rootCred)
	user := e.client(t, userCred)
	t0 := e.clock.Now()
	k1 := createKey(t, root, nil).KeyId
	k2 := createKey(t, root, nil).KeyId
	for range 3 {
		e.clock.Step(time.Minute)
		if _, err := encrypt(user, k1, "eA==", ""); err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
	}
	e.clock.Step(time.Minute)
	createKeyVersion(t, root, k1)
	describeKey(t, user, k2)
	e.clock.Step(time.Minute)
	t5 := e.clock.Now()
	failing := kms.CreateDescribeKeyRequest()
	failing.KeyId = "alias/none"
	_, err := user.DescribeKey(failing)
	wantServerError(t, err, kmsapi.CodeAliasNotFound, http.StatusNotFound)

	tc := e.trailClient(t, rootCred)
	lookup := func(t *testing.T, mutate func(*actiontrail.LookupEventsRequest), attrs ...string) *actiontrail.LookupEventsResponse {
		t.Helper()
		req := actiontrail.CreateLookupEventsRequest()
		req.StartTime, req.EndTime = t0.Format(iso), t5.Format(iso)
		var la []actiontrail.LookupEventsLookupAttribute
		for i := 0; i+1 < len(attrs); i += 2 {
			la = append(la, actiontrail.LookupEventsLookupAttribute{Key: attrs[i], Value: attrs[i+1]})
		}
		if la != nil {
			req.LookupAttribute = &la
		}
		if mutate != nil {
			mutate(req)
		}
		resp, err := tc.LookupEvents(req)
		if err != nil {
			t.Fatalf("LookupEvents: %v", err)
		}
		if resp.RequestId == "" || resp.StartTime != req.StartTime || resp.EndTime != req.EndTime {
			t.Fatalf("LookupEvents envelope: %+v", resp)
		}
		return resp
	}
	names := func(resp *actiontrail.LookupEventsResponse) []string {
		var out []string
		for _, ev := range resp.Events {
			out = append(out, ev["eventName"].(string))
		}
		return out
	}

	for _, c := range []struct {
		name  string
		attrs []string
		want  []string // newest first
	}{
		{"EventName", []string{"EventName", "Encrypt"}, []string{"Encrypt", "Encrypt", "Encrypt"}},
		{"EventRW Write", []string{"EventRW", "Write"}, []string{"CreateKeyVersion", "CreateKey", "CreateKey"}},
		{"ResourceName", []string{"ResourceName", k2}, []string{"DescribeKey", "CreateKey"}},
		{"ResourceType", []string{"ResourceType", "ACS::KMS::Key", "EventName", "CreateKeyVersion"}, []string{"CreateKeyVersion"}},
		{"User", []string{"User", "rekey-operator"}, []string{"DescribeKey", "DescribeKey", "Encrypt", "Encrypt", "Encrypt"}},
		{"EventAccessKeyId", []string{"EventAccessKeyId", rootCred.AccessKeyID, "ServiceName", "Kms"}, []string{"CreateKeyVersion", "CreateKey", "CreateKey"}},
		{"two attributes", []string{"User", "rekey-operator", "EventRW", "read"}, []string{"DescribeKey", "DescribeKey", "Encrypt", "Encrypt", "Encrypt"}},
		{"no match", []string{"EventName", "ScheduleKeyDeletion"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := lookup(t, nil, c.attrs...)
			if got := names(resp); strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("events %v, want %v", got, c.want)
			}
			if resp.NextToken != "" {
				t.Fatalf("NextToken %q on a complete page", resp.NextToken)
			}
		})
	}

	t.Run("event shape", func(t *testing.T) {
		resp := lookup(t, nil, "EventName", "DescribeKey", "ResourceName", k2)
		ev := resp.Events[0]
		ui := ev["userIdentity"].(map[string]interface{})
		rp := ev["requestParameters"].(map[string]interface{})
		if ev["serviceName"] != "Kms" || ev["eventRW"] != "Read" || ev["eventType"] != "ApiCall" || rp["KeyId"] != k2 ||
			ui["type"] != "ram-user" || ui["userName"] != "rekey-operator" || ui["accessKeyId"] != userCred.AccessKeyID {
			t.Fatalf("event %v", ev)
		}
	})

	t.Run("failed call", func(t *testing.T) {
		resp := lookup(t, nil, "EventName", "DescribeKey", "User", "rekey-operator")
		if ev := resp.Events[0]; ev["errorCode"] != kmsapi.CodeAliasNotFound || ev["errorMessage"] == "" {
			t.Fatalf("newest DescribeKey event %v, want the failed one", ev)
		}
	})

	t.Run("time range", func(t *testing.T) {
		resp := lookup(t, func(r *actiontrail.LookupEventsRequest) {
			r.StartTime = t0.Add(2 * time.Minute).Format(iso)
			r.EndTime = t0.Add(3 * time.Minute).Format(iso)
		}, "ServiceName", "Kms")
		if got := names(resp); strings.Join(got, ",") != "Encrypt,Encrypt" {
			t.Fatalf("events in [t0+2m, t0+3m]: %v", got)
		}
	})

	t.Run("paging", func(t *testing.T) {
		for _, dir := range []string{"BACKWARD", "FORWARD"} {
			var seen []string
			var ids []string
			token := ""
			for page := 0; ; page++ {
				resp := lookup(t, func(r *actiontrail.LookupEventsRequest) {
					r.MaxResults, r.NextToken, r.Direction = "2", token, dir
				}, "ServiceName", "Kms")
				if len(resp.Events) > 2 || page > 5 {
					t.Fatalf("%s page %d has %d events", dir, page, len(resp.Events))
				}
				seen = append(seen, names(resp)...)
				for _, ev := range resp.Events {
					ids = append(ids, ev["eventId"].(string))
				}
				if token = resp.NextToken; token == "" {
					break
				}
			}
			want := "CreateKey,CreateKey,Encrypt,Encrypt,Encrypt,CreateKeyVersion,DescribeKey,DescribeKey"
			if dir == "BACKWARD" {
				want = "DescribeKey,DescribeKey,CreateKeyVersion,Encrypt,Encrypt,Encrypt,CreateKey,CreateKey"
			}
			if got := strings.Join(seen, ","); got != want {
				t.Fatalf("%s pages: %s, want %s", dir, got, want)
			}
			uniq := map[string]bool{}
			for _, id := range ids {
				uniq[id] = true
			}
			if len(uniq) != len(ids) {
				t.Fatalf("%s paging repeated events", dir)
			}
		}
	})

	t.Run("lookups are themselves recorded", func(t *testing.T) {
		resp := lookup(t, func(r *actiontrail.LookupEventsRequest) { r.EndTime = e.clock.Now().Format(iso) },
			"ServiceName", "Actiontrail")
		if len(resp.Events) == 0 || resp.Events[0]["eventName"] != "LookupEvents" || resp.Events[0]["apiVersion"] != "2020-07-06" {
			t.Fatalf("Actiontrail events: %v", resp.Events)
		}
	})

	for _, c := range []struct {
		name   string
		mutate func(*actiontrail.LookupEventsRequest)
	}{
		{"unknown attribute", func(r *actiontrail.LookupEventsRequest) {
			r.LookupAttribute = &[]actiontrail.LookupEventsLookupAttribute{{Key: "Principal", Value: "x"}}
		}},
		{"attribute without value", func(r *actiontrail.LookupEventsRequest) {
			r.LookupAttribute = &[]actiontrail.LookupEventsLookupAttribute{{Key: "EventName"}}
		}},
		{"MaxResults above 50", func(r *actiontrail.LookupEventsRequest) { r.MaxResults = "51" }},
		{"bad NextToken", func(r *actiontrail.LookupEventsRequest) { r.NextToken = "%%%" }},
		{"bad StartTime", func(r *actiontrail.LookupEventsRequest) { r.StartTime = "last week" }},
		{"start after end", func(r *actiontrail.LookupEventsRequest) { r.StartTime, r.EndTime = t5.Format(iso), t0.Format(iso) }},
		{"bad Direction", func(r *actiontrail.LookupEventsRequest) { r.Direction = "SIDEWAYS" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := actiontrail.CreateLookupEventsRequest()
			c.mutate(req)
			_, err := tc.LookupEvents(req)
			code := kmsapi.CodeInvalidParameter
			if c.name == "attribute without value" {
				code = kmsapi.CodeMissingParameter
			}
			wantServerError(t, err, code, http.StatusBadRequest)
		})
	}
}

func TestCallCounters(t *testing.T) {
	e := newEnv(t, nil)
	keyID := createKey(t, e.client(t, rootCred), nil).KeyId

	const workers, each = 8, 5
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		c := e.client(t, userCred)
		go func() {
			defer wg.Done()
			for range each {
				req := kms.CreateDescribeKeyRequest()
				req.KeyId = keyID
				if _, err := c.DescribeKey(req); err != nil {
					t.Errorf("DescribeKey: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	bad := e.client(t, kmsapi.Credential{AccessKeyID: "nobody", AccessKeySecret: "x"})
	_, err := bad.ListKeys(kms.CreateListKeysRequest())
	wantServerError(t, err, kmsapi.CodeAccessKeyNotFound, http.StatusNotFound)

	want := map[string]int64{"CreateKey": 1, "DescribeKey": workers * each, "ListKeys": 1}
	if got := e.srv.Calls("DescribeKey"); got != workers*each {
		t.Fatalf("Calls(DescribeKey) = %d, want %d", got, workers*each)
	}
	if got := e.srv.Calls("Encrypt"); got != 0 {
		t.Fatalf("Calls(Encrypt) = %d, want 0", got)
	}
	counts := e.srv.CallCounts()
	if len(counts) != len(want) {
		t.Fatalf("CallCounts() = %v, want %v", counts, want)
	}
	for k, v := range want {
		if counts[k] != v {
			t.Fatalf("CallCounts() = %v, want %v", counts, want)
		}
	}

	resp, err := http.Get(e.ts.URL + kmsapi.StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats kmsapi.Stats
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatalf("decode stats: %v", err)
	}
	if resp.StatusCode != http.StatusOK || stats.Keys != 1 || stats.Records != 1+workers*each+1 || stats.Calls["DescribeKey"] != workers*each {
		t.Fatalf("stats %d %+v", resp.StatusCode, stats)
	}
	post, err := http.Post(e.ts.URL+kmsapi.StatsPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST stats: %d", post.StatusCode)
	}
}

func TestRecordLimit(t *testing.T) {
	e := newEnv(t, func(o *kmsapi.Options) { o.RecordLimit = 3 })
	c := e.client(t, rootCred)
	var rids []string
	for range 8 {
		resp, err := c.ListKeys(kms.CreateListKeysRequest())
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		rids = append(rids, resp.RequestId)
	}
	kept := e.srv.Records()
	if len(kept) != 3 {
		t.Fatalf("kept %d records, want 3", len(kept))
	}
	for i, r := range kept {
		if r.RequestID != rids[5+i] {
			t.Fatalf("kept record %d is %s, want %s (the newest three, oldest first)", i, r.RequestID, rids[5+i])
		}
	}
	if n := len(e.records()); n != 8 {
		t.Fatalf("OnRecord saw %d records, want all 8", n)
	}
	resp, err := e.trailClient(t, rootCred).LookupEvents(actiontrail.CreateLookupEventsRequest())
	if err != nil {
		t.Fatalf("LookupEvents: %v", err)
	}
	if len(resp.Events) != 3 || resp.Events[0]["requestId"] != rids[7] {
		t.Fatalf("LookupEvents over a 3-record trail: %v", resp.Events)
	}
}

// TestThrottleAnswersLikeTheGateway: a throttled action answers Throttling.User (HTTP 400) to the
// unmodified SDK until it is released; other actions are untouched.
func TestThrottleAnswersLikeTheGateway(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.Throttle("LookupEvents", true)
	_, err := e.trailClient(t, rootCred).LookupEvents(actiontrail.CreateLookupEventsRequest())
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) || se.ErrorCode() != kmsapi.CodeThrottlingUser || se.HttpStatus() != http.StatusBadRequest {
		t.Fatalf("throttled LookupEvents: %v, want %s with HTTP 400", err, kmsapi.CodeThrottlingUser)
	}
	createKey(t, e.client(t, rootCred), nil) // other actions are untouched
	e.srv.Throttle("LookupEvents", false)
	if _, err := e.trailClient(t, rootCred).LookupEvents(actiontrail.CreateLookupEventsRequest()); err != nil {
		t.Fatalf("released LookupEvents: %v", err)
	}
}
