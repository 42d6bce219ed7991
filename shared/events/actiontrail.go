package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

// ActionTrail event kinds, the last part of an ActionTrail CloudEvent type
// ("kms:ActionTrail:ApiCall"); they equal the record's eventType.
const (
	ActionTrailAPICall            = actiontrail.TypeAPICall
	ActionTrailConsoleOperation   = actiontrail.TypeConsoleOperation
	ActionTrailAliyunServiceEvent = actiontrail.TypeAliyunServiceEvent
)

// ActionTrailType splits an ActionTrail CloudEvent type "<product>:ActionTrail:<kind>" into product
// ("kms") and kind ("ApiCall"). ok is false for any other type.
func ActionTrailType(typ string) (product, kind string, ok bool) {
	parts := strings.Split(typ, ":")
	if len(parts) != 3 || parts[1] != "ActionTrail" || parts[0] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// decodeRecord decodes an ActionTrail record from a CloudEvent's data: a JSON object, or a JSON string
// holding one (seen with batching event-streaming sources).
func decodeRecord(data json.RawMessage) (*actiontrail.Event, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil, errors.New("data is missing")
	}
	if data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		data = bytes.TrimSpace([]byte(s))
	}
	if len(data) == 0 || data[0] != '{' {
		return nil, errors.New("data is not a JSON object")
	}
	rec, err := actiontrail.Decode(data)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}
