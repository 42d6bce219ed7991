package kmsapi_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestSDKCreateAndDescribeKey(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, userCred)
	now := e.clock.Now().Format(iso)

	md := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "7d"
		r.ProtectionLevel = "HSM"
	})
	if !uuidRE.MatchString(md.KeyId) || !uuidRE.MatchString(md.PrimaryKeyVersion) {
		t.Fatalf("KeyId %q / PrimaryKeyVersion %q are not UUIDs", md.KeyId, md.PrimaryKeyVersion)
	}
	want := kms.KeyMetadata{
		KeyId:              md.KeyId,
		Arn:                "acs:kms:" + testRegion + ":" + testAccount + ":key/" + md.KeyId,
		KeyState:           "Enabled",
		KeyUsage:           "ENCRYPT/DECRYPT",
		KeySpec:            "Aliyun_AES_256",
		ProtectionLevel:    "HSM",
		Origin:             "Aliyun_KMS",
		CreationDate:       now,
		Creator:            testAccount,
		Description:        "rekey test key",
		PrimaryKeyVersion:  md.PrimaryKeyVersion,
		AutomaticRotation:  "Enabled",
		RotationInterval:   "604800s",
		LastRotationDate:   now,
		NextRotationDate:   e.clock.Now().Add(7 * 24 * time.Hour).Format(iso),
		DeletionProtection: "Disabled",
	}
	if md != want {
		t.Fatalf("CreateKey metadata:\n got %+v\nwant %+v", md, want)
	}

	aliasReq := kms.CreateCreateAliasRequest()
	aliasReq.AliasName, aliasReq.KeyId = "alias/rekey-main", md.KeyId
	if _, err := c.CreateAlias(aliasReq); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}

	for _, tc := range []struct{ name, ref string }{
		{"id", md.KeyId},
		{"alias", "alias/rekey-main"},
		{"key arn", md.Arn},
		{"alias arn", "acs:kms:" + testRegion + ":" + testAccount + ":alias/rekey-main"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeKey(t, c, tc.ref); got != want {
				t.Fatalf("DescribeKey(%s):\n got %+v\nwant %+v", tc.ref, got, want)
			}
		})
	}

	for _, tc := range []struct {
		name, ref, code string
	}{
		{"unknown id", "00000000-0000-4000-8000-000000000000", kmsapi.CodeKeyNotFound},
		{"unknown alias", "alias/nope", kmsapi.CodeAliasNotFound},
		{"arn of another region", "acs:kms:cn-beijing:" + testAccount + ":key/" + md.KeyId, kmsapi.CodeKeyNotFound},
		{"arn of another account", "acs:kms:" + testRegion + ":999:key/" + md.KeyId, kmsapi.CodeKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := kms.CreateDescribeKeyRequest()
			req.KeyId = tc.ref
			_, err := c.DescribeKey(req)
			wantServerError(t, err, tc.code, http.StatusNotFound)
		})
	}
}

func TestSDKListKeysAndAliases(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	var ids []string
	for range 3 {
		ids = append(ids, createKey(t, c, nil).KeyId)
	}
	var got []string
	for pageNo, wantLen := range map[int]int{1: 2, 2: 1, 3: 0} {
		req := kms.CreateListKeysRequest()
		req.PageNumber, req.PageSize = requests.NewInteger(pageNo), "2"
		resp, err := c.ListKeys(req)
		if err != nil {
			t.Fatalf("ListKeys page %d: %v", pageNo, err)
		}
		if resp.TotalCount != 3 || resp.PageNumber != pageNo || resp.PageSize != 2 || len(resp.Keys.Key) != wantLen {
			t.Fatalf("ListKeys page %d: total %d number %d size %d items %d", pageNo, resp.TotalCount,
				resp.PageNumber, resp.PageSize, len(resp.Keys.Key))
		}
		for _, k := range resp.Keys.Key {
			if k.KeyArn != "acs:kms:"+testRegion+":"+testAccount+":key/"+k.KeyId {
				t.Fatalf("KeyArn %q does not match KeyId %q", k.KeyArn, k.KeyId)
			}
			got = append(got, k.KeyId)
		}
	}
	if len(got) != 3 {
		t.Fatalf("listed %v, want the 3 keys %v", got, ids)
	}

	dis := kms.CreateDisableKeyRequest()
	dis.KeyId = ids[1]
	if _, err := c.DisableKey(dis); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	req := kms.CreateListKeysRequest()
	req.Filters = `[{"Key":"KeyState","Values":["Disabled"]}]`
	resp, err := c.ListKeys(req)
	if err != nil {
		t.Fatalf("ListKeys filtered: %v", err)
	}
	if resp.TotalCount != 1 || resp.Keys.Key[0].KeyId != ids[1] {
		t.Fatalf("ListKeys KeyState=Disabled: %+v", resp.Keys.Key)
	}

	for i, name := range []string{"alias/b", "alias/a"} {
		r := kms.CreateCreateAliasRequest()
		r.AliasName, r.KeyId = name, ids[i]
		if _, err := c.CreateAlias(r); err != nil {
			t.Fatalf("CreateAlias %s: %v", name, err)
		}
	}
	dup := kms.CreateCreateAliasRequest()
	dup.AliasName, dup.KeyId = "alias/a", ids[2]
	_, err = c.CreateAlias(dup)
	wantServerError(t, err, kmsapi.CodeAliasAlreadyExists, http.StatusBadRequest)
	bad := kms.CreateCreateAliasRequest()
	bad.AliasName, bad.KeyId = "no-prefix", ids[2]
	_, err = c.CreateAlias(bad)
	wantServerError(t, err, kmsapi.CodeInvalidParameter, http.StatusBadRequest)

	la, err := c.ListAliases(kms.CreateListAliasesRequest())
	if err != nil {
		t.Fatalf("ListAliases: %v", err)
	}
	if la.TotalCount != 2 || len(la.Aliases.Alias) != 2 {
		t.Fatalf("ListAliases: %+v", la.Aliases)
	}
	first := la.Aliases.Alias[0]
	if first.AliasName != "alias/a" || first.KeyId != ids[1] ||
		first.AliasArn != "acs:kms:"+testRegion+":"+testAccount+":alias/a" {
		t.Fatalf("ListAliases[0] = %+v", first)
	}
}

func TestSDKKeyVersions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)

	var created []string
	for range 4 {
		e.clock.Step(time.Hour)
		v := createKeyVersion(t, c, md.KeyId)
		if v.KeyId != md.KeyId || v.CreationDate != e.clock.Now().Format(iso) || !uuidRE.MatchString(v.KeyVersionId) {
			t.Fatalf("CreateKeyVersion = %+v", v)
		}
		created = append(created, v.KeyVersionId)
		if got := describeKey(t, c, md.KeyId); got.PrimaryKeyVersion != v.KeyVersionId || got.LastRotationDate != v.CreationDate {
			t.Fatalf("after CreateKeyVersion primary %s last rotation %s, want %s %s",
				got.PrimaryKeyVersion, got.LastRotationDate, v.KeyVersionId, v.CreationDate)
		}
	}

	all := append([]string{md.PrimaryKeyVersion}, created...)
	var listed []string
	for _, pageNo := range []int{1, 2, 3} {
		req := kms.CreateListKeyVersionsRequest()
		req.KeyId, req.PageNumber, req.PageSize = md.KeyId, requests.NewInteger(pageNo), "2"
		resp, err := c.ListKeyVersions(req)
		if err != nil {
			t.Fatalf("ListKeyVersions: %v", err)
		}
		if resp.TotalCount != 5 || resp.PageNumber != pageNo || resp.PageSize != 2 {
			t.Fatalf("ListKeyVersions page %d: %+v", pageNo, resp)
		}
		for _, v := range resp.KeyVersions.KeyVersion {
			if v.KeyId != md.KeyId {
				t.Fatalf("version %+v has the wrong KeyId", v)
			}
			listed = append(listed, v.KeyVersionId)
		}
	}
	if len(listed) != len(all) {
		t.Fatalf("listed %v, want %v", listed, all)
	}
	for i := range all {
		if listed[i] != all[i] {
			t.Fatalf("listed %v, want %v (oldest first)", listed, all)
		}
	}

	dv := kms.CreateDescribeKeyVersionRequest()
	dv.KeyId, dv.KeyVersionId = "alias/none", created[0]
	_, err := c.DescribeKeyVersion(dv)
	wantServerError(t, err, kmsapi.CodeAliasNotFound, http.StatusNotFound)
	dv.KeyId = md.KeyId
	resp, err := c.DescribeKeyVersion(dv)
	if err != nil {
		t.Fatalf("DescribeKeyVersion: %v", err)
	}
	if resp.KeyVersion.KeyVersionId != created[0] || resp.KeyVersion.KeyId != md.KeyId || resp.RequestId == "" {
		t.Fatalf("DescribeKeyVersion = %+v", resp.KeyVersion)
	}
	dv.KeyVersionId = "00000000-0000-4000-8000-000000000000"
	_, err = c.DescribeKeyVersion(dv)
	wantServerError(t, err, kmsapi.CodeKeyVersionNotFound, http.StatusNotFound)
}

func TestSDKMinVersionInterval(t *testing.T) {
	e := newEnv(t, func(o *kmsapi.Options) { o.MinVersionInterval = 7 * 24 * time.Hour })
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)
	req := kms.CreateCreateKeyVersionRequest()
	req.KeyId = md.KeyId
	_, err := c.CreateKeyVersion(req)
	wantServerError(t, err, kmsapi.CodeLimitExceeded, http.StatusBadRequest)
	e.clock.Step(7 * 24 * time.Hour)
	createKeyVersion(t, c, md.KeyId)
}

func TestSDKUpdateRotationPolicy(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)
	if md.AutomaticRotation != "Disabled" || md.RotationInterval != "" || md.NextRotationDate != "" {
		t.Fatalf("new key rotation: %q %q %q", md.AutomaticRotation, md.RotationInterval, md.NextRotationDate)
	}
	e.clock.Step(time.Hour)

	for _, tc := range []struct {
		name, enable, interval string
		code                   string
		wantAuto, wantInterval string
	}{
		{name: "seconds", enable: "true", interval: "604800s", wantAuto: "Enabled", wantInterval: "604800s"},
		{name: "days", enable: "true", interval: "30d", wantAuto: "Enabled", wantInterval: "2592000s"},
		{name: "hours", enable: "true", interval: "240h", wantAuto: "Enabled", wantInterval: "864000s"},
		{name: "too short", enable: "true", interval: "3600s", code: kmsapi.CodeInvalidParameter},
		{name: "too long", enable: "true", interval: "731d", code: kmsapi.CodeInvalidParameter},
		{name: "garbage", enable: "true", interval: "weekly", code: kmsapi.CodeInvalidParameter},
		{name: "missing interval", enable: "true", code: kmsapi.CodeMissingParameter},
		{name: "missing flag", code: kmsapi.CodeMissingParameter},
		{name: "bad flag", enable: "yes", code: kmsapi.CodeInvalidParameter},
		{name: "disable", enable: "false", wantAuto: "Disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := kms.CreateUpdateRotationPolicyRequest()
			req.KeyId = md.KeyId
			req.EnableAutomaticRotation = requests.Boolean(tc.enable)
			req.RotationInterval = tc.interval
			resp, err := c.UpdateRotationPolicy(req)
			if tc.code != "" {
				wantServerError(t, err, tc.code, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatalf("UpdateRotationPolicy: %v", err)
			}
			if resp.RequestId == "" {
				t.Fatal("no RequestId")
			}
			got := describeKey(t, c, md.KeyId)
			if got.AutomaticRotation != tc.wantAuto || got.RotationInterval != tc.wantInterval {
				t.Fatalf("AutomaticRotation %q RotationInterval %q, want %q %q",
					got.AutomaticRotation, got.RotationInterval, tc.wantAuto, tc.wantInterval)
			}
			if tc.wantAuto == "Enabled" {
				d, _ := time.ParseDuration(tc.wantInterval)
				if want := md.LastRotationDate; got.LastRotationDate != want {
					t.Fatalf("LastRotationDate %s, want %s", got.LastRotationDate, want)
				}
				last, _ := time.Parse(iso, got.LastRotationDate)
				if got.NextRotationDate != last.Add(d).Format(iso) {
					t.Fatalf("NextRotationDate %s, want LastRotationDate+%s", got.NextRotationDate, d)
				}
			}
		})
	}
}

func TestSDKKeyStateLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)
	enc, err := encrypt(c, md.KeyId, "c2VjcmV0", "")
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}

	cryptoCalls := map[string]func() error{
		"Encrypt": func() error { _, err := encrypt(c, md.KeyId, "aGVsbG8=", ""); return err },
		"Decrypt": func() error { _, err := decrypt(c, enc.CiphertextBlob, ""); return err },
		"GenerateDataKey": func() error {
			r := kms.CreateGenerateDataKeyRequest()
			r.KeyId = md.KeyId
			_, err := c.GenerateDataKey(r)
			return err
		},
		"CreateKeyVersion": func() error {
			r := kms.CreateCreateKeyVersionRequest()
			r.KeyId = md.KeyId
			_, err := c.CreateKeyVersion(r)
			return err
		},
	}
	assertAll := func(t *testing.T, code string) {
		t.Helper()
		for name, f := range cryptoCalls {
			err := f()
			if code == "" {
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				continue
			}
			t.Run(name, func(t *testing.T) { wantServerError(t, err, code, http.StatusConflict) })
		}
	}

	dis := kms.CreateDisableKeyRequest()
	dis.KeyId = md.KeyId
	if _, err := c.DisableKey(dis); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	if got := describeKey(t, c, md.KeyId); got.KeyState != "Disabled" {
		t.Fatalf("KeyState %q after DisableKey", got.KeyState)
	}
	assertAll(t, kmsapi.CodeKeyDisabled)

	en := kms.CreateEnableKeyRequest()
	en.KeyId = md.KeyId
	if _, err := c.EnableKey(en); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	assertAll(t, "")

	sched := kms.CreateScheduleKeyDeletionRequest()
	sched.KeyId = md.KeyId
	for _, days := range []string{"", "6", "367", "x"} {
		sched.PendingWindowInDays = requests.Integer(days)
		_, err := c.ScheduleKeyDeletion(sched)
		code := kmsapi.CodeInvalidParameter
		if days == "" {
			code = kmsapi.CodeMissingParameter
		}
		wantServerError(t, err, code, http.StatusBadRequest)
	}
	sched.PendingWindowInDays = "7"
	if _, err := c.ScheduleKeyDeletion(sched); err != nil {
		t.Fatalf("ScheduleKeyDeletion: %v", err)
	}
	got := describeKey(t, c, md.KeyId)
	if got.KeyState != "PendingDeletion" || got.DeleteDate != e.clock.Now().Add(7*24*time.Hour).Format(iso) {
		t.Fatalf("after ScheduleKeyDeletion: state %q delete date %q", got.KeyState, got.DeleteDate)
	}
	assertAll(t, kmsapi.CodeKeyPendingDeletion)
	_, err = c.EnableKey(en)
	wantServerError(t, err, kmsapi.CodeKeyPendingDeletion, http.StatusConflict)
	_, err = c.DisableKey(dis)
	wantServerError(t, err, kmsapi.CodeKeyPendingDeletion, http.StatusConflict)

	cancel := kms.CreateCancelKeyDeletionRequest()
	cancel.KeyId = md.KeyId
	if _, err := c.CancelKeyDeletion(cancel); err != nil {
		t.Fatalf("CancelKeyDeletion: %v", err)
	}
	if got := describeKey(t, c, md.KeyId); got.KeyState != "Enabled" || got.DeleteDate != "" {
		t.Fatalf("after CancelKeyDeletion: state %q delete date %q", got.KeyState, got.DeleteDate)
	}
	assertAll(t, "")
	_, err = c.CancelKeyDeletion(cancel)
	wantServerError(t, err, kmsapi.CodeStateModifiedFailed, http.StatusConflict)

	// Once the window has passed the key is gone.
	if _, err := c.ScheduleKeyDeletion(sched); err != nil {
		t.Fatalf("ScheduleKeyDeletion: %v", err)
	}
	e.clock.Step(7*24*time.Hour - time.Second)
	describeKey(t, c, md.KeyId)
	e.clock.Step(time.Second)
	req := kms.CreateDescribeKeyRequest()
	req.KeyId = md.KeyId
	_, err = c.DescribeKey(req)
	wantServerError(t, err, kmsapi.CodeKeyNotFound, http.StatusNotFound)
	_, err = decrypt(c, enc.CiphertextBlob, "")
	wantServerError(t, err, kmsapi.CodeKeyNotFound, http.StatusNotFound)
}

func TestSDKCommonRequestGETAndFormBody(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)

	for _, tc := range []struct {
		name   string
		method string
		form   bool
	}{
		{"GET with query", http.MethodGet, false},
		{"POST with query", http.MethodPost, false},
		{"POST with form body", http.MethodPost, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := requests.NewCommonRequest()
			req.Method = tc.method
			req.Scheme = "http"
			req.Domain = e.host()
			req.Product, req.Version, req.ApiName = "Kms", "2016-01-20", "DescribeKey"
			if tc.form {
				req.FormParams["KeyId"] = md.KeyId
			} else {
				req.QueryParams["KeyId"] = md.KeyId
			}
			resp, err := c.ProcessCommonRequest(req)
			if err != nil {
				t.Fatalf("DescribeKey via %s: %v", tc.name, err)
			}
			var body kms.DescribeKeyResponse
			if err := json.Unmarshal(resp.GetHttpContentBytes(), &body); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if body.KeyMetadata.KeyId != md.KeyId || body.RequestId == "" {
				t.Fatalf("DescribeKey via %s = %s", tc.name, resp.GetHttpContentString())
			}
		})
	}

	for _, tc := range []struct {
		name, version, action, code string
		status                      int
	}{
		{"unknown action", "2016-01-20", "RotateEverything", kmsapi.CodeActionNotFound, http.StatusNotFound},
		{"actiontrail action on kms version", "2016-01-20", "LookupEvents", kmsapi.CodeActionNotFound, http.StatusNotFound},
		{"unknown version", "2099-01-01", "DescribeKey", kmsapi.CodeInvalidParameter, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := requests.NewCommonRequest()
			req.Scheme, req.Domain = "http", e.host()
			req.Product, req.Version, req.ApiName = "Kms", tc.version, tc.action
			_, err := c.ProcessCommonRequest(req)
			wantServerError(t, err, tc.code, tc.status)
		})
	}
	if n := e.srv.Calls("RotateEverything"); n != 1 {
		t.Fatalf("Calls(RotateEverything) = %d, want 1", n)
	}
}
