package fc

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestRuntimeAPIProtocol speaks the runtime API the way fc-runtime-go-sdk
// does: several next calls wait at once, each gets one invocation with the
// headers the SDK parses, and answers go to {id}/response or {id}/error.
func TestRuntimeAPIProtocol(t *testing.T) {
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	api := NewRuntimeAPI(clocktesting.NewFakePassiveClock(now))
	ts := httptest.NewServer(api)
	defer ts.Close()
	base := ts.URL + "/2020-11-11/runtime/invocation/"

	type got struct {
		header http.Header
		body   string
	}
	nexts := make(chan got, 3)
	var wg sync.WaitGroup
	for range 3 { // three waiting next calls, only two invocations
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(base + "next")
			if err != nil {
				t.Errorf("next: %v", err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK {
				nexts <- got{resp.Header, string(b)}
			}
		}()
	}

	inv := Invocation{RequestID: "req-1", Payload: []byte(`{"a":1}`), Timeout: 1500 * time.Millisecond,
		FunctionName: "rekey-rotation", Handler: "main", MemoryMB: 512, Region: "cn-hangzhou", AccountID: "5068",
		Credentials: Credentials{AccessKeyID: "STS.ak", AccessKeySecret: "sk", SecurityToken: "tok"}, RetryCount: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1, err := api.Dispatch(ctx, inv)
	if err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	if !c1.Deadline.Equal(now.Add(1500 * time.Millisecond)) {
		t.Fatalf("Deadline = %v", c1.Deadline)
	}
	inv2 := inv
	inv2.RequestID, inv2.Credentials, inv2.RetryCount = "req-2", Credentials{}, 0
	c2, err := api.Dispatch(ctx, inv2)
	if err != nil {
		t.Fatalf("Dispatch 2: %v", err)
	}
	if _, err := api.Dispatch(ctx, inv2); err == nil {
		t.Fatal("a request id in flight was dispatched twice")
	}

	byID := map[string]got{}
	for range 2 {
		g := <-nexts
		byID[g.header.Get(HeaderRequestID)] = g
	}
	h := byID["req-1"].header
	want := map[string]string{
		HeaderDeadline: strconv.FormatInt(now.Add(1500*time.Millisecond).UnixMilli(), 10), HeaderTimeout: "2",
		HeaderAccessKeyID: "STS.ak", HeaderAccessKeySecret: "sk", HeaderSecurityToken: "tok",
		HeaderFunctionName: "rekey-rotation", HeaderFunctionHandler: "main", HeaderFunctionMemory: "512",
		HeaderRegion: "cn-hangzhou", HeaderAccountID: "5068", HeaderRetryCount: "2",
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, h.Get(k), v)
		}
	}
	if byID["req-1"].body != `{"a":1}` {
		t.Errorf("body = %q", byID["req-1"].body)
	}
	if h2 := byID["req-2"].header; h2.Get(HeaderAccessKeyID) != "" || h2.Get(HeaderRetryCount) != "0" {
		t.Errorf("req-2 headers: %v", h2)
	}

	post := func(path, body string) int {
		resp, err := http.Post(base+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("post %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("req-1/response", `{"ok":true}`); code != http.StatusOK {
		t.Fatalf("response status %d", code)
	}
	<-c1.Done()
	if r := c1.Response(); string(r.Body) != `{"ok":true}` || r.Error != nil {
		t.Fatalf("c1 response = %+v", r)
	}
	if code := post("req-1/response", `{}`); code != http.StatusNotFound {
		t.Fatalf("second response status %d, want 404", code)
	}
	if code := post("req-2/error", `{"errorMessage":"nope","errorType":"errorString","stackTrace":[{"path":"x"}]}`); code != http.StatusOK {
		t.Fatalf("error status %d", code)
	}
	<-c2.Done()
	if r := c2.Response(); r.Error == nil || r.Error.Message != "nope" || r.Error.Type != "errorString" || len(r.Error.StackTrace) == 0 {
		t.Fatalf("c2 response = %+v", r)
	}
	if code := post("unknown/response", `{}`); code != http.StatusNotFound {
		t.Fatalf("unknown id status %d", code)
	}

	// The third next call is still waiting; Close answers it 503.
	api.Close()
	wg.Wait()
	if _, err := api.Dispatch(ctx, Invocation{RequestID: "late"}); err == nil {
		t.Fatal("Dispatch after Close succeeded")
	}
}

func TestRuntimeAPIDispatchTimesOut(t *testing.T) {
	api := NewRuntimeAPI(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := api.Invoke(ctx, Invocation{RequestID: "r"}); err == nil {
		t.Fatal("Invoke without a next call succeeded")
	}
	// The abandoned id is free again.
	api.mu.Lock()
	n := len(api.inflight)
	api.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls left in flight", n)
	}
}
