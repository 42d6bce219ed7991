package twin

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
)

// Scanner looks for secrets in any text a test collects (logs, responses, stored objects, audit
// records), as Leaks does for the functions' output, and counts what it looked through. Add the
// needles first, then Scan each text. It is not safe for concurrent use.
type Scanner struct {
	ix      needleIndex
	needles int
	texts   int
	bytes   int64
	hits    map[string]bool
}

// ScanCounts says how much a Scanner looked through and found.
type ScanCounts struct {
	// Needles is the number of byte strings looked for (every form of every value).
	Needles int `json:"needles"`
	// Texts and Bytes are what was scanned.
	Texts int   `json:"texts"`
	Bytes int64 `json:"bytes"`
	// Hits is the number of (text, secret) pairs found.
	Hits int `json:"hits"`
}

// NewScanner returns an empty Scanner.
func NewScanner() *Scanner { return &Scanner{hits: map[string]bool{}} }

// AddCredential looks for a credential (an AccessKey secret, an STS or bearer token), raw and in
// base64 (as in a Basic or encoded header), described by what. Values shorter than 8 bytes are
// skipped: they would match by chance.
func (s *Scanner) AddCredential(what, value string) {
	s.add(what, []byte(value))
	s.add(what, []byte(base64.StdEncoding.EncodeToString([]byte(value))))
}

// AddValue looks for a Secret's value raw, in base64, base64url and hex, the forms a log line or a
// JSON body would carry it in.
func (s *Scanner) AddValue(what string, v []byte) {
	for _, form := range [][]byte{v, []byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v)), []byte(hex.EncodeToString(v))} {
		s.add(what, form)
	}
}

// AddTwin adds every credential of the twin (Twin.Credentials).
func (s *Scanner) AddTwin(t *Twin) {
	for what, v := range t.Credentials() {
		s.AddCredential(what, v)
	}
}

func (s *Scanner) add(what string, v []byte) {
	if len(v) < minNeedle {
		return
	}
	s.ix.add(what, v)
	s.needles++
}

// Scan looks for every needle in text, described by where.
func (s *Scanner) Scan(where string, text []byte) {
	s.texts++
	s.bytes += int64(len(text))
	for _, what := range s.ix.find(text) {
		s.hits[fmt.Sprintf("%s contains the %s", where, what)] = true
	}
}

// Hits describes each secret found, without quoting it, sorted.
func (s *Scanner) Hits() []string {
	out := make([]string, 0, len(s.hits))
	for h := range s.hits {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// Counts returns what the Scanner looked through and found so far.
func (s *Scanner) Counts() ScanCounts {
	return ScanCounts{Needles: s.needles, Texts: s.texts, Bytes: s.bytes, Hits: len(s.hits)}
}
