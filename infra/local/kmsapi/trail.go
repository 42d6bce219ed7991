package kmsapi

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"
)

// trailActions are the ActionTrail 2020-07-06 actions the server implements.
var trailActions = map[string]handler{
	"LookupEvents": (*call).lookupEvents,
}

// LookupEvents limits (ActionTrail API reference: MaxResults 0 to 50, the
// default range is the last seven days, the default order BACKWARD).
const (
	defaultMaxResults  = 20
	maxMaxResults      = 50
	defaultLookbackDur = 7 * 24 * time.Hour
)

// lookupFields maps the LookupAttribute keys ActionTrail defines to the record
// field each one matches.
var lookupFields = map[string]func(*Record) string{
	"EventName":        func(r *Record) string { return r.EventName },
	"EventRW":          func(r *Record) string { return r.EventRW },
	"EventId":          func(r *Record) string { return r.EventID },
	"ServiceName":      func(r *Record) string { return r.ServiceName },
	"ResourceName":     func(r *Record) string { return r.ResourceName },
	"ResourceType":     func(r *Record) string { return r.ResourceType },
	"User":             func(r *Record) string { return r.UserIdentity.UserName },
	"EventAccessKeyId": func(r *Record) string { return r.UserIdentity.AccessKeyID },
}

var lookupAttrParam = regexp.MustCompile(`^LookupAttribute\.([1-9][0-9]{0,2})\.(Key|Value)$`)

type lookupAttr struct {
	key, value string
	field      func(*Record) string
}

// lookupToken is the decoded NextToken: the position after which to continue.
type lookupToken struct {
	Seq       uint64 `json:"seq"`
	Direction string `json:"dir"`
}

func (c *call) lookupTime(name string, def time.Time) (time.Time, *apiError) {
	v := c.p[name]
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(timeLayout, v)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, v); err != nil {
			return time.Time{}, errInvalidParameterf(name, "want YYYY-MM-DDThh:mm:ssZ")
		}
	}
	return t.UTC(), nil
}

func (c *call) lookupAttributes() ([]lookupAttr, *apiError) {
	byIndex := map[string]*lookupAttr{}
	for name, v := range c.p {
		m := lookupAttrParam.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		a := byIndex[m[1]]
		if a == nil {
			a = &lookupAttr{}
			byIndex[m[1]] = a
		}
		if m[2] == "Key" {
			a.key = v
		} else {
			a.value = v
		}
	}
	idx := make([]string, 0, len(byIndex))
	for i := range byIndex {
		idx = append(idx, i)
	}
	sort.Strings(idx)
	attrs := make([]lookupAttr, 0, len(idx))
	for _, i := range idx {
		a := byIndex[i]
		f, ok := lookupFields[a.key]
		if !ok {
			return nil, errInvalidParameterf("LookupAttribute."+i+".Key",
				"want ServiceName, EventName, User, EventId, ResourceType, ResourceName, EventRW or EventAccessKeyId")
		}
		if a.value == "" {
			return nil, errMissingParameter("LookupAttribute." + i + ".Value")
		}
		a.field = f
		attrs = append(attrs, *a)
	}
	return attrs, nil
}

func (a lookupAttr) match(r *Record) bool {
	got := a.field(r)
	if a.key == "EventRW" {
		return strings.EqualFold(got, a.value)
	}
	return got == a.value
}

func (c *call) lookupEvents() (any, *apiError) {
	end, aerr := c.lookupTime("EndTime", c.now.UTC())
	if aerr != nil {
		return nil, aerr
	}
	start, aerr := c.lookupTime("StartTime", end.Add(-defaultLookbackDur))
	if aerr != nil {
		return nil, aerr
	}
	if start.After(end) {
		return nil, errInvalidParameterf("StartTime", "after EndTime")
	}
	limit, aerr := c.p.intInRange("MaxResults", defaultMaxResults, 0, maxMaxResults)
	if aerr != nil {
		return nil, aerr
	}
	if limit == 0 {
		limit = defaultMaxResults
	}
	dir := strings.ToUpper(c.p["Direction"])
	switch dir {
	case "":
		dir = "BACKWARD"
	case "BACKWARD", "FORWARD":
	default:
		return nil, errInvalidParameter("Direction")
	}
	attrs, aerr := c.lookupAttributes()
	if aerr != nil {
		return nil, aerr
	}
	var after *lookupToken
	if raw := c.p["NextToken"]; raw != "" {
		data, err := base64.RawURLEncoding.DecodeString(raw)
		var tok lookupToken
		if err != nil || json.Unmarshal(data, &tok) != nil || tok.Direction != dir {
			return nil, errInvalidParameter("NextToken")
		}
		after = &tok
	}

	recs := c.s.Records()
	if dir == "BACKWARD" {
		for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
			recs[i], recs[j] = recs[j], recs[i]
		}
	}
	var page []Record
	more := false
	for i := range recs {
		r := &recs[i]
		if after != nil && ((dir == "BACKWARD" && r.seq >= after.Seq) || (dir == "FORWARD" && r.seq <= after.Seq)) {
			continue
		}
		if r.at.Before(start) || r.at.After(end) || !matchAll(attrs, r) {
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, *r)
	}

	events := make([]json.RawMessage, 0, len(page))
	for i := range page {
		ev, err := json.Marshal(page[i])
		if err != nil {
			return nil, errInternal()
		}
		events = append(events, ev)
	}
	resp := struct {
		StartTime string            `json:"StartTime"`
		EndTime   string            `json:"EndTime"`
		NextToken string            `json:"NextToken,omitempty"`
		Events    []json.RawMessage `json:"Events"`
	}{StartTime: formatTime(start), EndTime: formatTime(end), Events: events}
	if more {
		tok, err := json.Marshal(lookupToken{Seq: page[len(page)-1].seq, Direction: dir})
		if err != nil {
			return nil, errInternal()
		}
		resp.NextToken = base64.RawURLEncoding.EncodeToString(tok)
	}
	return resp, nil
}

func matchAll(attrs []lookupAttr, r *Record) bool {
	for _, a := range attrs {
		if !a.match(r) {
			return false
		}
	}
	return true
}
