package twin

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
)

// minNeedle is the shortest value Leaks looks for: shorter ones would match by chance.
const minNeedle = 8

// Leaks scans Output for every credential of Credentials and every value of secrets (raw, base64,
// base64url and hex, the forms a log or a JSON body would carry it in) and describes each hit
// without quoting it. secrets maps a description ("value of Secret ns/name") to the value; values
// shorter than 8 bytes are skipped.
func (t *Twin) Leaks(secrets map[string][]byte) []string {
	return t.LeaksIn(secrets, t.Output())
}

// LeaksIn is Leaks over texts (by a description) instead of the functions' output: evidence
// records, a CLI's output.
func (t *Twin) LeaksIn(secrets map[string][]byte, texts map[string][]byte) []string {
	var ix needleIndex
	for what, v := range t.Credentials() {
		ix.add(what, []byte(v))
	}
	for what, v := range secrets {
		if len(v) < minNeedle {
			continue
		}
		for _, form := range [][]byte{v, []byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v)), []byte(hex.EncodeToString(v))} {
			ix.add(what, form)
		}
	}
	var hits []string
	for where, text := range texts {
		for _, what := range ix.find(text) {
			hits = append(hits, fmt.Sprintf("%s contains the %s", where, what))
		}
	}
	sort.Strings(hits)
	return hits
}

// needleIndex finds many needles in a text in one pass: needles are indexed by their first
// minNeedle bytes, each position of the text is looked up, and candidates are compared in full.
type needleIndex struct {
	byPrefix map[string][]needle
}

type needle struct {
	what  string
	value []byte
}

func (ix *needleIndex) add(what string, v []byte) {
	if len(v) < minNeedle {
		return
	}
	if ix.byPrefix == nil {
		ix.byPrefix = map[string][]needle{}
	}
	p := string(v[:minNeedle])
	ix.byPrefix[p] = append(ix.byPrefix[p], needle{what: what, value: v})
}

// find returns the descriptions of the needles text contains, each once.
func (ix *needleIndex) find(text []byte) []string {
	seen := map[string]bool{}
	var out []string
	for i := 0; i+minNeedle <= len(text); i++ {
		cands, ok := ix.byPrefix[string(text[i:i+minNeedle])]
		if !ok {
			continue
		}
		for _, n := range cands {
			if !seen[n.what] && bytes.HasPrefix(text[i:], n.value) {
				seen[n.what] = true
				out = append(out, n.what)
			}
		}
	}
	return out
}
