package events

import "time"

// Timer is a Function Compute timer trigger payload:
// {"triggerTime":"2023-12-26T07:49:00Z","triggerName":"timer","payload":"<string>"}.
type Timer struct {
	// TriggerTime is when the trigger fired (RFC 3339, UTC); the off-peak window is judged by it.
	TriggerTime time.Time `json:"triggerTime"`
	// TriggerName names the trigger in s.yaml.
	TriggerName string `json:"triggerName"`
	// Payload is the trigger's configured payload ("" when none).
	Payload string `json:"payload,omitempty"`
}
