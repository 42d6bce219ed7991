package kmsapi

import (
	"context"
	"strconv"
	"time"
)

// Rotation interval bounds of UpdateRotationPolicy and CreateKey: 7 to 730 days.
const (
	minRotationInterval = 7 * 24 * time.Hour
	maxRotationInterval = 730 * 24 * time.Hour
)

// parseRotationInterval parses the "integer[unit]" form KMS accepts for
// RotationInterval: a number followed by s, m, h or d ("604800s", "7d").
func parseRotationInterval(s string) (time.Duration, bool) {
	if len(s) < 2 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 's':
		unit = time.Second
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n <= 0 || n > int64(maxRotationInterval/unit) {
		return 0, false
	}
	d := time.Duration(n) * unit
	return d, d >= minRotationInterval && d <= maxRotationInterval
}

// formatRotationInterval renders an interval the way DescribeKey does ("604800s").
func formatRotationInterval(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// rotationEvent describes an automatic rotation, for the optional
// AliyunServiceEvent record.
type rotationEvent struct {
	keyID, versionID string
	at               time.Time
}

// applySchedulesLocked performs what time has made due: keys whose deletion
// window has passed are deleted, enabled keys whose automatic rotation is due
// get one new primary version. It reports whether state changed. s.mu must be
// held.
func (s *Server) applySchedulesLocked(now time.Time) (changed bool, rotated []rotationEvent, err error) {
	var expired []string
	for _, k := range s.st.Keys {
		switch k.State {
		case statePendingDeletion:
			if !now.Before(k.DeleteDate) {
				expired = append(expired, k.ID)
			}
		case stateEnabled:
			next := k.nextRotation()
			if next.IsZero() || now.Before(next) {
				continue
			}
			v, err := k.addVersion(now)
			if err != nil {
				return changed, rotated, err
			}
			changed = true
			rotated = append(rotated, rotationEvent{keyID: k.ID, versionID: v.ID, at: now})
		}
	}
	for _, id := range expired {
		s.st.removeKey(id)
		changed = true
	}
	return changed, rotated, nil
}

// CheckSchedules evaluates automatic rotation and scheduled deletion now (by
// Options.Clock), as every request also does, and persists any change. It
// returns how many keys were rotated.
func (s *Server) CheckSchedules() (int, error) {
	s.mu.Lock()
	changed, rotated, err := s.applySchedulesLocked(s.opts.Clock.Now())
	if err == nil && changed {
		err = saveState(s.opts.StatePath, s.st)
	}
	s.mu.Unlock()
	s.emitRotationRecords(rotated)
	return len(rotated), err
}

// Run evaluates schedules every Options.RotationCheckInterval until ctx is
// done. It returns nil when ctx is cancelled; failures to persist are logged
// and retried at the next tick.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.RotationCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.CheckSchedules(); err != nil {
				s.opts.Logger.Error("kms-local: evaluate schedules", "err", err)
			}
		}
	}
}

// emitRotationRecords records automatic rotations when
// Options.AutoRotationEventName asks for it. s.mu must not be held.
func (s *Server) emitRotationRecords(rotated []rotationEvent) {
	if s.opts.AutoRotationEventName == "" {
		return
	}
	source := s.opts.EventSource
	if source == "" {
		source = "kms." + s.opts.Region + ".aliyuncs.com"
	}
	for _, ev := range rotated {
		id, _ := newUUID()
		s.addRecord(Record{
			EventID:           id,
			EventVersion:      "1",
			EventSource:       source,
			EventName:         s.opts.AutoRotationEventName,
			EventType:         "AliyunServiceEvent",
			EventRW:           "Write",
			EventTime:         formatTime(ev.at),
			AcsRegion:         s.opts.Region,
			ServiceName:       "Kms",
			APIVersion:        kmsVersion,
			RequestID:         id,
			RequestParameters: map[string]string{"KeyId": ev.keyID},
			ResponseElements:  map[string]string{"KeyId": ev.keyID, "KeyVersionId": ev.versionID},
			ResourceType:      resourceTypeKey,
			ResourceName:      ev.keyID,
			UserIdentity:      UserIdentity{Type: "system", AccountID: s.opts.AccountID},
			at:                ev.at,
		})
	}
}
