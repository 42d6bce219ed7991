package eventbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/events"
)

// SourceKMS is the EventBridge source of Key Management Service events.
const SourceKMS = "acs.kms"

// KMSEvent turns a KMS stand-in record into the CloudEvent EventBridge would
// carry for it: source acs.kms, type "kms:ActionTrail:<eventType>" (ApiCall,
// ConsoleOperation or AliyunServiceEvent), id and time of the record,
// aliyunpublishtime from publishTime in the "…PRC" form, the record as data.
// accountID is the account the event belongs to ("" means the caller's).
//
// ok is false for records EventBridge does not carry: read-type calls
// (Encrypt, Decrypt, GenerateDataKey, Describe*, List*, ...) and calls of other
// services (the stand-in's ActionTrail LookupEvents). Failed write calls are
// carried, with errorCode set, as ActionTrail records them.
func KMSEvent(rec kmsapi.Record, accountID string, publishTime time.Time) (ev events.CloudEvent, ok bool, err error) {
	if !strings.EqualFold(rec.EventRW, "Write") || !strings.EqualFold(rec.ServiceName, "Kms") {
		return events.CloudEvent{}, false, nil
	}
	if rec.EventID == "" || rec.EventType == "" {
		return events.CloudEvent{}, false, fmt.Errorf("kms record %q (%s): eventId and eventType are required", rec.EventID, rec.EventName)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return events.CloudEvent{}, false, fmt.Errorf("kms record %s: encode: %w", rec.EventID, err)
	}
	if accountID == "" {
		accountID = rec.UserIdentity.AccountID
	}
	ev = events.CloudEvent{
		ID:                 rec.EventID,
		Source:             SourceKMS,
		SpecVersion:        events.SpecVersion,
		Type:               "kms:ActionTrail:" + rec.EventType,
		Time:               rec.EventTime,
		DataContentType:    "application/json",
		AliyunAccountID:    accountID,
		AliyunPublishTime:  FormatPublishTime(publishTime),
		AliyunEventBusName: DefaultBusName,
		AliyunRegionID:     rec.AcsRegion,
		AliyunPublishAddr:  rec.SourceIPAddress,
		Data:               data,
	}
	if rec.ResourceName != "" {
		ev.Subject = "acs:kms:" + rec.AcsRegion + ":" + accountID + ":key/" + rec.ResourceName
	}
	return ev, true, nil
}

// Publisher is what KMSBridge publishes to; *Router implements it.
type Publisher interface {
	Publish(ctx context.Context, ev events.CloudEvent) (Delivery, error)
}

var _ Publisher = (*Router)(nil)

// KMSBridgeOptions configures a KMSBridge. The zero value is usable.
type KMSBridgeOptions struct {
	// AccountID is the aliyunaccountid of the events ("" means each record's
	// caller account).
	AccountID string
	// Clock stamps aliyunpublishtime; nil means the real clock.
	Clock clock.PassiveClock
	// OnError, when set, receives every conversion or delivery error (the
	// event is not retried).
	OnError func(rec kmsapi.Record, err error)
}

// KMSBridge publishes the KMS stand-in's write-type records as CloudEvents.
// Plug OnRecord into kmsapi.Options.OnRecord: it only queues, so the KMS
// answer is never held up by a delivery (which may run a function that calls
// KMS itself). One goroutine delivers the queue in record order. Create it
// with NewKMSBridge and stop it with Close; all methods are safe for
// concurrent use.
type KMSBridge struct {
	pub    Publisher
	opts   KMSBridgeOptions
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	queue     []kmsapi.Record
	queued    uint64        // records accepted by OnRecord
	handled   uint64        // records converted and, if write-type, delivered
	published uint64        // events published without error
	progress  chan struct{} // closed and replaced whenever handled moves or the bridge stops
	wake      chan struct{} // buffered(1): the queue is non-empty
	closed    bool
}

// NewKMSBridge starts a bridge that publishes to pub.
func NewKMSBridge(pub Publisher, opts KMSBridgeOptions) *KMSBridge {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &KMSBridge{
		pub: pub, opts: opts, ctx: ctx, cancel: cancel,
		done:     make(chan struct{}),
		progress: make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
	go b.run()
	return b
}

// OnRecord queues a record for publishing and returns at once. Records
// arriving after Close are dropped.
func (b *KMSBridge) OnRecord(rec kmsapi.Record) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.queue = append(b.queue, rec)
	b.queued++
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Published returns how many events the bridge has published so far with no
// conversion or delivery error.
func (b *KMSBridge) Published() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(b.published)
}

// Flush waits until every record queued before the call has been handled
// (published, or skipped as a read), or ctx ends.
func (b *KMSBridge) Flush(ctx context.Context) error {
	b.mu.Lock()
	target := b.queued
	for b.handled < target && !b.closed {
		ch := b.progress
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flush kms events: %w", ctx.Err())
		}
		b.mu.Lock()
	}
	missing := target - min(b.handled, target)
	b.mu.Unlock()
	if missing > 0 {
		return fmt.Errorf("flush kms events: bridge closed with %d records undelivered", missing)
	}
	return nil
}

// Close stops the bridge: an in-flight delivery sees its context cancelled and
// queued records are dropped (Flush first to deliver them). It waits for the
// delivery goroutine to end.
func (b *KMSBridge) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.progress)
		b.progress = make(chan struct{})
	}
	b.mu.Unlock()
	b.cancel()
	<-b.done
}

func (b *KMSBridge) run() {
	defer close(b.done)
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		if len(b.queue) == 0 {
			b.mu.Unlock()
			select {
			case <-b.wake:
				continue
			case <-b.ctx.Done():
				return
			}
		}
		rec := b.queue[0]
		b.queue = b.queue[1:]
		b.mu.Unlock()

		published := b.deliver(rec)

		b.mu.Lock()
		b.handled++
		if published {
			b.published++
		}
		close(b.progress)
		b.progress = make(chan struct{})
		b.mu.Unlock()
	}
}

// deliver converts and publishes one record; it reports whether an event was
// published.
func (b *KMSBridge) deliver(rec kmsapi.Record) bool {
	ev, ok, err := KMSEvent(rec, b.opts.AccountID, b.opts.Clock.Now())
	if err == nil && ok {
		_, err = b.pub.Publish(b.ctx, ev)
	}
	if err != nil && b.opts.OnError != nil {
		b.opts.OnError(rec, err)
	}
	return ok && err == nil
}
