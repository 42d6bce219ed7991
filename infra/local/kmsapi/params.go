package kmsapi

import (
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxBodyBytes bounds a form body; KMS requests carry at most a few KB.
const maxBodyBytes = 1 << 20

// timeLayout is the ISO 8601 UTC form KMS and ActionTrail use for dates.
const timeLayout = "2006-01-02T15:04:05Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// params are the request parameters of an RPC call: the query string merged
// with a form body. The SDK sends everything in the query string (the body is
// empty) and signs the union of both, so both are accepted. A name given twice
// keeps its first value, query before body.
type params map[string]string

// readParams parses the query string and, for a form-encoded body, the body.
func readParams(r *http.Request) (params, *apiError) {
	p := params{}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return p, errParseRequest()
	}
	p.addAll(q)
	if r.Body == nil || r.Body == http.NoBody {
		return p, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil || len(body) > maxBodyBytes {
		return p, errParseRequest()
	}
	if len(body) == 0 {
		return p, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return p, errParseRequest()
		}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return p, errParseRequest()
	}
	p.addAll(form)
	return p, nil
}

func (p params) addAll(v url.Values) {
	for k, vs := range v {
		if _, ok := p[k]; ok || len(vs) == 0 {
			continue
		}
		p[k] = vs[0]
	}
}

// required returns a non-empty parameter or a MissingParameter error.
func (p params) required(name string) (string, *apiError) {
	v := p[name]
	if v == "" {
		return "", errMissingParameter(name)
	}
	return v, nil
}

// intInRange parses an optional integer parameter, returning def when absent.
func (p params) intInRange(name string, def, lo, hi int) (int, *apiError) {
	v, ok := p[name]
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errInvalidParameterf(name, "want an integer in [%d, %d]", lo, hi)
	}
	return n, nil
}

// boolean parses an optional "true"/"false" parameter.
func (p params) boolean(name string) (value, present bool, aerr *apiError) {
	switch strings.ToLower(p[name]) {
	case "":
		return false, false, nil
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	default:
		return false, true, errInvalidParameter(name)
	}
}

// page is a validated PageNumber/PageSize pair.
type page struct{ number, size int }

func (p params) page() (page, *apiError) {
	n, aerr := p.intInRange("PageNumber", 1, 1, 1<<30)
	if aerr != nil {
		return page{}, aerr
	}
	s, aerr := p.intInRange("PageSize", 10, 1, 100)
	if aerr != nil {
		return page{}, aerr
	}
	return page{number: n, size: s}, nil
}

// bounds returns the slice bounds of this page over total items.
func (pg page) bounds(total int) (lo, hi int) {
	lo = (pg.number - 1) * pg.size
	if lo > total {
		lo = total
	}
	hi = lo + pg.size
	if hi > total {
		hi = total
	}
	return lo, hi
}
