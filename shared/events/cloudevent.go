package events

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

// SpecVersion is the only CloudEvents version EventBridge emits and Decode accepts.
const SpecVersion = "1.0"

// CloudEvent is one EventBridge event (CloudEvents 1.0 JSON with Alibaba's extension attributes).
// Times are kept as sent; EventTime and PublishTime parse them.
type CloudEvent struct {
	ID                 string          `json:"id"`
	Source             string          `json:"source"`
	SpecVersion        string          `json:"specversion"`
	Type               string          `json:"type"`
	Subject            string          `json:"subject,omitempty"`
	Time               string          `json:"time,omitempty"`
	DataContentType    string          `json:"datacontenttype,omitempty"`
	DataSchema         string          `json:"dataschema,omitempty"`
	AliyunAccountID    string          `json:"aliyunaccountid,omitempty"`
	AliyunPublishTime  string          `json:"aliyunpublishtime,omitempty"`
	AliyunEventBusName string          `json:"aliyuneventbusname,omitempty"`
	AliyunRegionID     string          `json:"aliyunregionid,omitempty"`
	AliyunPublishAddr  string          `json:"aliyunpublishaddr,omitempty"`
	Data               json.RawMessage `json:"data,omitempty"`

	// Record is Data decoded when Type is an ActionTrail type ("<product>:ActionTrail:<kind>"); nil
	// otherwise. Decode fills it.
	Record *actiontrail.Event `json:"-"`
}

// DedupKey identifies an event for deduplication: EventBridge may deliver the same event more than
// once, always with the same source and id.
type DedupKey struct {
	Source string `json:"source"`
	ID     string `json:"id"`
}

// String returns "source/id".
func (k DedupKey) String() string { return k.Source + "/" + k.ID }

// DedupKey returns the event's deduplication key.
func (e CloudEvent) DedupKey() DedupKey { return DedupKey{Source: e.Source, ID: e.ID} }

// EventTime parses the CloudEvents time attribute (RFC 3339, leniently: see ParseTime).
func (e CloudEvent) EventTime() (time.Time, error) {
	t, err := ParseTime(e.Time)
	if err != nil {
		return time.Time{}, fmt.Errorf("event %s: time: %w", e.DedupKey(), err)
	}
	return t, nil
}

// PublishTime parses aliyunpublishtime, which EventBridge has been seen to send as
// "2020-11-19T21:04:42.179PRC" as well as RFC 3339 (see ParseTime).
func (e CloudEvent) PublishTime() (time.Time, error) {
	t, err := ParseTime(e.AliyunPublishTime)
	if err != nil {
		return time.Time{}, fmt.Errorf("event %s: aliyunpublishtime: %w", e.DedupKey(), err)
	}
	return t, nil
}

// zoneNames maps the zone names seen at the end of Alibaba timestamps to fixed offsets. PRC, CST and
// Asia/Shanghai mean China Standard Time (UTC+8, no daylight saving) in Alibaba Cloud's output.
var zoneNames = map[string]*time.Location{
	"Z":             time.UTC,
	"UTC":           time.UTC,
	"GMT":           time.UTC,
	"PRC":           time.FixedZone("PRC", 8*3600),
	"CST":           time.FixedZone("CST", 8*3600),
	"Asia/Shanghai": time.FixedZone("Asia/Shanghai", 8*3600),
}

// namedZone matches a date-time followed by a zone name or an offset without a colon.
var namedZone = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?) ?([A-Za-z][A-Za-z/_]*|[+-]\d{4})?$`)

// ParseTime parses a timestamp leniently: RFC 3339 (with or without fractional seconds); a 'T' or a
// space between date and time; a zone given as a [+-]hhmm offset or as one of the names Z, UTC, GMT,
// PRC, CST, Asia/Shanghai (the last three are UTC+8), as in "2020-11-19T21:04:42.179PRC"; or
// milliseconds since the epoch. A time without a zone is refused: guessing it would shift a job's
// notBefore by hours.
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("empty timestamp")
	}
	if len(s) > 64 {
		return time.Time{}, fmt.Errorf("timestamp of %d characters is too long", len(s))
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if isDigits(s) && len(s) >= 10 && len(s) <= 15 {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return time.UnixMilli(ms).UTC(), nil
		}
	}
	m := namedZone.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("timestamp %q: want RFC 3339 or 2006-01-02T15:04:05.000PRC", s)
	}
	wall, zone := m[1]+"T"+m[2], m[3]
	if zone == "" {
		return time.Time{}, fmt.Errorf("timestamp %q has no zone", s)
	}
	if zone[0] == '+' || zone[0] == '-' {
		t, err := time.Parse("2006-01-02T15:04:05.999999999-0700", wall+zone)
		if err != nil {
			return time.Time{}, fmt.Errorf("timestamp %q: %w", s, err)
		}
		return t, nil
	}
	loc, ok := zoneNames[zone]
	if !ok {
		return time.Time{}, fmt.Errorf("timestamp %q: unknown zone %q", s, zone)
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", wall, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: %w", s, err)
	}
	return t, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
