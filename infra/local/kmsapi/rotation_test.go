package kmsapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"
	"go.uber.org/goleak"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

const week = 7 * 24 * time.Hour

func TestAutomaticRotationOnRequest(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	rotating := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "604800s"
	})
	disabled := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "604800s"
	})
	manual := createKey(t, c, nil)
	dis := kms.CreateDisableKeyRequest()
	dis.KeyId = disabled.KeyId
	if _, err := c.DisableKey(dis); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	old, err := encrypt(c, rotating.KeyId, "b2xk", "")
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}

	e.clock.Step(week - time.Second)
	if got := describeKey(t, c, rotating.KeyId); got.PrimaryKeyVersion != rotating.PrimaryKeyVersion {
		t.Fatalf("rotated a second early")
	}

	// Three intervals late: still exactly one new version, dated now.
	e.clock.Step(3*week + time.Second)
	now := e.clock.Now()
	got := describeKey(t, c, rotating.KeyId)
	if got.PrimaryKeyVersion == rotating.PrimaryKeyVersion {
		t.Fatal("automatic rotation did not happen")
	}
	if got.LastRotationDate != now.Format(iso) || got.NextRotationDate != now.Add(week).Format(iso) {
		t.Fatalf("after rotation LastRotationDate %s NextRotationDate %s, now %s",
			got.LastRotationDate, got.NextRotationDate, now.Format(iso))
	}
	if vs := listKeyVersions(t, c, rotating.KeyId); len(vs) != 2 || vs[1].KeyVersionId != got.PrimaryKeyVersion {
		t.Fatalf("versions after rotation: %+v", vs)
	}
	if dec, err := decrypt(c, old.CiphertextBlob, ""); err != nil || dec.KeyVersionId != rotating.PrimaryKeyVersion {
		t.Fatalf("old blob after rotation: %+v, %v", dec, err)
	}
	if enc, err := encrypt(c, rotating.KeyId, "bmV3", ""); err != nil || enc.KeyVersionId != got.PrimaryKeyVersion {
		t.Fatalf("Encrypt after rotation: %+v, %v", enc, err)
	}

	d := describeKey(t, c, disabled.KeyId)
	if d.AutomaticRotation != "Suspended" || len(listKeyVersions(t, c, disabled.KeyId)) != 1 {
		t.Fatalf("a disabled key rotated or is not Suspended: %+v", d)
	}
	if len(listKeyVersions(t, c, manual.KeyId)) != 1 {
		t.Fatal("a key without a rotation policy rotated")
	}

	// Re-enabling a key whose rotation is overdue rotates it at once.
	en := kms.CreateEnableKeyRequest()
	en.KeyId = disabled.KeyId
	if _, err := c.EnableKey(en); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	if n := len(listKeyVersions(t, c, disabled.KeyId)); n != 2 {
		t.Fatalf("re-enabled overdue key has %d versions, want 2", n)
	}
}

func TestCheckSchedules(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "7d"
	})
	if n, err := e.srv.CheckSchedules(); err != nil || n != 0 {
		t.Fatalf("CheckSchedules before due = %d, %v", n, err)
	}
	e.clock.Step(week)
	if n, err := e.srv.CheckSchedules(); err != nil || n != 1 {
		t.Fatalf("CheckSchedules when due = %d, %v", n, err)
	}
	if n, err := e.srv.CheckSchedules(); err != nil || n != 0 {
		t.Fatalf("CheckSchedules again = %d, %v", n, err)
	}
	if n := len(listKeyVersions(t, c, md.KeyId)); n != 2 {
		t.Fatalf("%d versions, want 2", n)
	}
}

func TestRunRotatesInBackground(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEnv(t, func(o *kmsapi.Options) {
		o.RotationCheckInterval = time.Millisecond
		o.AutoRotationEventName = "RotateKey"
	})
	c := e.client(t, rootCred)
	md := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "7d"
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx) }()

	e.clock.Step(week)
	// Poll the in-memory trail (no API call, which would rotate by itself).
	deadline := time.Now().Add(10 * time.Second)
	var ev *kmsapi.Record
	for ev == nil && time.Now().Before(deadline) {
		for _, r := range e.srv.Records() {
			if r.EventType == "AliyunServiceEvent" {
				ev = &r
				break
			}
		}
		if ev == nil {
			time.Sleep(time.Millisecond) // polling wait for the background ticker
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if ev == nil {
		t.Fatal("Run did not rotate the key")
	}
	if ev.EventName != "RotateKey" || ev.ResourceName != md.KeyId || ev.UserIdentity.Type != "system" ||
		ev.EventSource != "kms."+testRegion+".aliyuncs.com" || ev.EventRW != "Write" || ev.ServiceName != "Kms" ||
		ev.ResponseElements["KeyVersionId"] == "" || ev.EventTime != e.clock.Now().Format(iso) {
		t.Fatalf("rotation event: %+v", ev)
	}
	if got := describeKey(t, c, md.KeyId); got.PrimaryKeyVersion != ev.ResponseElements["KeyVersionId"] {
		t.Fatalf("primary %s, rotation event says %s", got.PrimaryKeyVersion, ev.ResponseElements["KeyVersionId"])
	}
	e.ts.Close()
	e.ts.Client().CloseIdleConnections()
}
