package apimetrics

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
)

// The metric names this package reads.
const (
	// StatusMetric is the last time (Unix seconds) the plugin's Status call returned a key ID.
	StatusMetric = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds"
	// UseMetric is the last time (Unix seconds) a key ID was used to read or write a value.
	UseMetric = "apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds"
	// ToStorage is UseMetric's transformation_type of writes.
	ToStorage = "to_storage"

	seriesPrefix = "apiserver_envelope_encryption_key_id_hash_"
)

// ErrForbidden is wrapped by Scrape when the identity may not GET /metrics (HTTP 401 or 403).
var ErrForbidden = errors.New("not allowed to read /metrics")

// Series is one sample of StatusMetric or of UseMetric with transformation_type to_storage.
type Series struct {
	Provider        string  // provider_name
	KeyIDHash       string  // key_id_hash, "sha256:<hex>"
	APIServerIDHash string  // apiserver_id_hash, "sha256:<hex>"
	Timestamp       float64 // the gauge's value: Unix seconds
}

// Snapshot is what one scrape of /metrics said about KMS v2 key IDs.
type Snapshot struct {
	// Status holds the StatusMetric series.
	Status []Series
	// Writes holds the UseMetric series of transformation_type to_storage.
	Writes []Series
}

// HashKeyID returns the key_id_hash label value of a key ID: "sha256:" and the hex SHA-256 of it,
// as the API server computes it ("" for an empty key ID).
func HashKeyID(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Parse reads the Prometheus text exposition format and keeps the KMS v2 key-ID series; other
// metrics are skipped without being parsed.
func Parse(r io.Reader) (Snapshot, error) {
	// Keep only the lines of our families (and their HELP/TYPE comments): /metrics of an API server
	// is megabytes, these series a few lines.
	var kept bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		trimmed := bytes.TrimLeft(line, " \t")
		if bytes.HasPrefix(trimmed, []byte("#")) {
			f := strings.Fields(string(trimmed))
			if len(f) >= 3 && (f[1] == "HELP" || f[1] == "TYPE") && strings.HasPrefix(f[2], seriesPrefix) {
				kept.Write(line)
				kept.WriteByte('\n')
			}
			continue
		}
		if bytes.HasPrefix(trimmed, []byte(seriesPrefix)) {
			kept.Write(line)
			kept.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("read metrics: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&kept)
	if err != nil {
		return Snapshot{}, fmt.Errorf("parse metrics: %w", err)
	}
	var s Snapshot
	if f := fams[StatusMetric]; f != nil {
		s.Status = series(f, "")
	}
	if f := fams[UseMetric]; f != nil {
		s.Writes = series(f, ToStorage)
	}
	return s, nil
}

// series extracts the samples of a gauge family; transformation, when set, keeps only samples with
// that transformation_type.
func series(f *dto.MetricFamily, transformation string) []Series {
	var out []Series
	for _, m := range f.GetMetric() {
		var s Series
		var tt string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "provider_name":
				s.Provider = l.GetValue()
			case "key_id_hash":
				s.KeyIDHash = l.GetValue()
			case "apiserver_id_hash":
				s.APIServerIDHash = l.GetValue()
			case "transformation_type":
				tt = l.GetValue()
			}
		}
		if transformation != "" && tt != transformation {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			s.Timestamp = m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			s.Timestamp = m.GetUntyped().GetValue()
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// Replica is what a Snapshot says about one API server and one KMS v2 provider.
type Replica struct {
	// APIServerIDHash identifies the API server.
	APIServerIDHash string
	// Provider is the KMS v2 provider name.
	Provider string
	// KeyIDHash is the key ID hash its latest Status call returned.
	KeyIDHash string
	// StatusAt is when that Status call returned (Unix seconds).
	StatusAt float64
	// StaleWriteHash, when not empty, is the hash of another key ID this replica wrote with after
	// StatusAt: its latest Status named KeyIDHash, but it still encrypts with an older key (the
	// DEK rotation that follows a new key ID failed, or has not happened yet).
	StaleWriteHash string
}

// Replicas reduces a snapshot to one entry per (API server, provider): the key ID hash of the most
// recent Status series and any write with another key ID after it. provider, when not empty, keeps
// only that provider. The result is sorted by API server and provider.
func (s Snapshot) Replicas(provider string) []Replica {
	type id struct{ server, provider string }
	latest := map[id]Series{}
	for _, x := range s.Status {
		if provider != "" && x.Provider != provider {
			continue
		}
		k := id{x.APIServerIDHash, x.Provider}
		if cur, ok := latest[k]; !ok || x.Timestamp > cur.Timestamp {
			latest[k] = x
		}
	}
	out := make([]Replica, 0, len(latest))
	for k, st := range latest {
		r := Replica{APIServerIDHash: k.server, Provider: k.provider, KeyIDHash: st.KeyIDHash, StatusAt: st.Timestamp}
		var staleAt float64
		for _, w := range s.Writes {
			if w.APIServerIDHash == k.server && w.Provider == k.provider && w.KeyIDHash != st.KeyIDHash && w.Timestamp > st.Timestamp && w.Timestamp > staleAt {
				r.StaleWriteHash, staleAt = w.KeyIDHash, w.Timestamp
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].APIServerIDHash != out[j].APIServerIDHash {
			return out[i].APIServerIDHash < out[j].APIServerIDHash
		}
		return out[i].Provider < out[j].Provider
	})
	return out
}

// Scraper reads /metrics through an API server client.
type Scraper struct {
	// Client is a REST client of the API server (rest.RESTClientFor or a discovery client's
	// RESTClient()).
	Client rest.Interface
}

// Scrape GETs /metrics in the text format and parses it. It wraps ErrForbidden when the identity
// may not read /metrics.
func (s Scraper) Scrape(ctx context.Context) (Snapshot, error) {
	raw, err := s.Client.Get().AbsPath("/metrics").SetHeader("Accept", "text/plain;version=0.0.4").DoRaw(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return Snapshot{}, fmt.Errorf("GET /metrics: %w: %v", ErrForbidden, err)
		}
		return Snapshot{}, fmt.Errorf("GET /metrics: %w", err)
	}
	return Parse(bytes.NewReader(raw))
}
