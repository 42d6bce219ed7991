package eventbridge

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/events"
)

func TestKMSEvent(t *testing.T) {
	rec := kmsapi.Record{
		EventID: "ab35e1f0-0000-4000-8000-000000000001", EventVersion: "1", EventSource: "kms.cn-hangzhou.aliyuncs.com",
		EventName: "DisableKey", EventType: "ConsoleOperation", EventRW: "Write", EventTime: "2026-11-28T09:21:32Z",
		AcsRegion: "cn-hangzhou", ServiceName: "Kms", APIVersion: "2016-01-20", RequestID: "r1",
		RequestParameters: map[string]string{"KeyId": "alias/rekey"}, ResourceName: "key-1",
		SourceIPAddress: "10.1.2.3", UserIdentity: kmsapi.UserIdentity{Type: "ram-user", AccountID: "111", UserName: "alice"},
	}
	ev, ok, err := KMSEvent(rec, "222", fixedNow)
	if err != nil || !ok {
		t.Fatalf("KMSEvent = %v, %v", ok, err)
	}
	if ev.Source != "acs.kms" || ev.Type != "kms:ActionTrail:ConsoleOperation" || ev.ID != rec.EventID ||
		ev.Time != rec.EventTime || ev.AliyunAccountID != "222" || ev.AliyunRegionID != "cn-hangzhou" ||
		ev.AliyunPublishTime != "2026-11-28T17:21:32.179PRC" || ev.Subject != "acs:kms:cn-hangzhou:222:key/key-1" {
		t.Fatalf("event = %+v", ev)
	}
	if ev2, _, _ := KMSEvent(rec, "", fixedNow); ev2.AliyunAccountID != "111" {
		t.Fatalf("default account = %q, want the caller's", ev2.AliyunAccountID)
	}
	for _, read := range []kmsapi.Record{
		{EventID: "1", EventName: "Encrypt", EventType: "ApiCall", EventRW: "Read", ServiceName: "Kms"},
		{EventID: "2", EventName: "DescribeKey", EventType: "ApiCall", EventRW: "Read", ServiceName: "Kms"},
		{EventID: "3", EventName: "LookupEvents", EventType: "ApiCall", EventRW: "Read", ServiceName: "Actiontrail"},
		{EventID: "4", EventName: "Something", EventType: "ApiCall", EventRW: "Write", ServiceName: "Actiontrail"},
	} {
		if _, ok, err := KMSEvent(read, "", fixedNow); ok || err != nil {
			t.Errorf("KMSEvent(%s/%s) = %v, %v; want skipped", read.ServiceName, read.EventName, ok, err)
		}
	}
	if _, _, err := KMSEvent(kmsapi.Record{EventName: "DisableKey", EventRW: "Write", ServiceName: "Kms"}, "", fixedNow); err == nil {
		t.Fatal("a write record without eventId must be an error")
	}
}

// TestKMSBridgeWithStandIn drives the real KMS stand-in with the unmodified
// SDK and checks that exactly its write calls reach the router, as acs.kms
// CloudEvents the functions' decoder reads, and that a rule with the rotation
// trigger's pattern sees CreateKeyVersion but no read.
func TestKMSBridgeWithStandIn(t *testing.T) {
	const account = "5068000000000001"
	router := NewRouter(Options{Clock: clocktesting.NewFakePassiveClock(fixedNow)})
	var all, rotation recorder
	must(t, router.AddRule("all", `{"source":["acs.kms"]}`, all.target))
	must(t, router.AddRule("rotation", `{"source":["acs.kms"],"type":["kms:ActionTrail:ApiCall"],
	  "data":{"eventName":["CreateKeyVersion","DisableKey","EnableKey","ScheduleKeyDeletion","CancelKeyDeletion","UpdateRotationPolicy"]}}`, rotation.target))

	var errMu sync.Mutex
	var bridgeErrs []error
	bridge := NewKMSBridge(router, KMSBridgeOptions{AccountID: account, Clock: clocktesting.NewFakePassiveClock(fixedNow),
		OnError: func(_ kmsapi.Record, err error) { errMu.Lock(); bridgeErrs = append(bridgeErrs, err); errMu.Unlock() }})
	defer bridge.Close()

	cred := kmsapi.Credential{AccessKeyID: "LTAIbridgeTEST01", AccessKeySecret: "bridge-secret",
		Identity: kmsapi.Identity{Type: kmsapi.IdentityRootAccount, AccountID: account, UserName: "root"}}
	srv, err := kmsapi.NewServer(kmsapi.Options{Region: "cn-hangzhou", AccountID: account,
		Credentials: []kmsapi.Credential{cred}, OnRecord: bridge.OnRecord})
	must(t, err)
	ts := httptest.NewServer(srv)
	defer ts.Close()

	client, err := kms.NewClientWithAccessKey("cn-hangzhou", cred.AccessKeyID, cred.AccessKeySecret)
	must(t, err)
	client.Domain = strings.TrimPrefix(ts.URL, "http://")
	client.GetConfig().WithScheme("HTTP")

	created, err := client.CreateKey(kms.CreateCreateKeyRequest())
	must(t, err)
	keyID := created.KeyMetadata.KeyId
	enc := kms.CreateEncryptRequest()
	enc.KeyId, enc.Plaintext = keyID, base64.StdEncoding.EncodeToString([]byte("hello"))
	_, err = client.Encrypt(enc)
	must(t, err)
	desc := kms.CreateDescribeKeyRequest()
	desc.KeyId = keyID
	_, err = client.DescribeKey(desc)
	must(t, err)
	ckv := kms.CreateCreateKeyVersionRequest()
	ckv.KeyId = keyID
	_, err = client.CreateKeyVersion(ckv)
	must(t, err)
	gdk := kms.CreateGenerateDataKeyRequest()
	gdk.KeyId = keyID
	_, err = client.GenerateDataKey(gdk)
	must(t, err)
	dis := kms.CreateDisableKeyRequest()
	dis.KeyId = "no-such-key"
	if _, err := client.DisableKey(dis); err == nil {
		t.Fatal("DisableKey of an unknown key succeeded")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, bridge.Flush(ctx))
	errMu.Lock()
	if len(bridgeErrs) != 0 {
		t.Fatalf("bridge errors: %v", bridgeErrs)
	}
	errMu.Unlock()

	var names []string
	for _, p := range all.payloads() {
		dec, err := events.Decode(p)
		if err != nil {
			t.Fatalf("events.Decode(%s): %v", p, err)
		}
		ev := dec.Events[0]
		if ev.Source != "acs.kms" || ev.Type != "kms:ActionTrail:ApiCall" || ev.AliyunAccountID != account ||
			ev.Record == nil || ev.Record.EventID != ev.ID || ev.Record.EventRW != "Write" {
			t.Fatalf("event %s", p)
		}
		names = append(names, ev.Record.EventName)
		if strings.Contains(string(p), "aGVsbG8") {
			t.Fatalf("plaintext leaked into an event: %s", p)
		}
	}
	// Reads (Encrypt, DescribeKey, GenerateDataKey) are never published; the
	// failed DisableKey is, with its errorCode.
	if got := strings.Join(names, ","); got != "CreateKey,CreateKeyVersion,DisableKey" {
		t.Fatalf("published %s", got)
	}
	if bridge.Published() != 3 {
		t.Fatalf("Published() = %d", bridge.Published())
	}
	rot := rotation.payloads()
	if len(rot) != 2 {
		t.Fatalf("rotation rule got %d events, want CreateKeyVersion and the failed DisableKey", len(rot))
	}
	dec, err := events.Decode(rot[1])
	must(t, err)
	if dec.Events[0].Record.ErrorCode == "" {
		t.Fatalf("failed DisableKey without errorCode: %s", rot[1])
	}
}

func TestKMSBridgeCloseAndFlush(t *testing.T) {
	block := make(chan struct{})
	pub := publisherFunc(func(ctx context.Context, ev events.CloudEvent) (Delivery, error) {
		select {
		case <-block:
			return Delivery{ID: ev.ID}, nil
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		}
	})
	b := NewKMSBridge(pub, KMSBridgeOptions{})
	b.OnRecord(kmsapi.Record{EventID: "1", EventName: "CreateKeyVersion", EventType: "ApiCall", EventRW: "Write", ServiceName: "Kms"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with a blocked target = %v", err)
	}
	close(block)
	must(t, b.Flush(context.Background()))
	b.Close()
	b.OnRecord(kmsapi.Record{EventID: "2", EventType: "ApiCall", EventRW: "Write", ServiceName: "Kms"})
	if err := b.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after Close: %v", err)
	}
	if b.Published() != 1 {
		t.Fatalf("Published() = %d", b.Published())
	}
}

type publisherFunc func(ctx context.Context, ev events.CloudEvent) (Delivery, error)

func (f publisherFunc) Publish(ctx context.Context, ev events.CloudEvent) (Delivery, error) {
	return f(ctx, ev)
}
