package storagemode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// TransformationMetric counts the API server's value transformations by resource, transformation
// type (to_storage for writes), transformer prefix and status (k8s.io/apiserver
// pkg/storage/value/metrics.go). Its to_storage series name the provider that writes each
// resource: the prefix of the first provider of the resource's encryption config.
const TransformationMetric = "apiserver_storage_transformation_operations_total"

// ErrMetricsForbidden is wrapped by ReadMetrics when the identity may not GET /metrics.
var ErrMetricsForbidden = errors.New("not allowed to read /metrics")

// ReadMetrics GETs the API server's /metrics in the text format. Behind a load balancer it sees one
// replica; the encryption config is the same on every replica of a healthy cluster.
func ReadMetrics(ctx context.Context, c rest.Interface) ([]byte, error) {
	raw, err := c.Get().AbsPath("/metrics").SetHeader("Accept", "text/plain;version=0.0.4").DoRaw(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return nil, fmt.Errorf("GET /metrics: %w", ErrMetricsForbidden)
		}
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	return raw, nil
}

// FromMetrics reads the writers of resources (group-resource strings: "secrets",
// "deployments.apps") from a /metrics body: one observation per resource and transformer prefix
// of the successful to_storage series of TransformationMetric. When those show none of the
// resources but the KMS v2 key-ID-hash series show KMS v2 writes, one AnyResource observation
// says so. No observation (the API server wrote none of the resources since it started, or hides
// the series) sets Unavailable.
func FromMetrics(raw []byte, resources []string) (Evidence, error) {
	ev := Evidence{Source: SourceMetrics}
	writes, err := transformationWrites(raw)
	if err != nil {
		return ev, err
	}
	for _, w := range writes {
		if !slices.Contains(resources, w.resource) {
			continue
		}
		p, name := providerOfPrefix(w.prefix)
		ev.Observations = append(ev.Observations, Observation{Resource: w.resource, Provider: p, KeyName: name,
			Detail: fmt.Sprintf("%.0f writes through prefix %q since the API server started (%s)", w.count, w.prefix, TransformationMetric)})
	}
	if len(ev.Observations) > 0 {
		return ev, nil
	}
	snap, err := apimetrics.Parse(bytes.NewReader(raw))
	if err != nil {
		return ev, fmt.Errorf("metrics: %w", err)
	}
	providers := map[string]bool{}
	for _, w := range snap.Writes {
		providers[w.Provider] = true
	}
	if len(providers) > 0 {
		names := make([]string, 0, len(providers))
		for n := range providers {
			names = append(names, n)
		}
		sort.Strings(names)
		ev.Observations = append(ev.Observations, Observation{Resource: AnyResource, Provider: storedvalue.KMSv2, KeyName: strings.Join(names, ","),
			Detail: "KMS v2 writes in " + apimetrics.UseMetric})
		return ev, nil
	}
	ev.Unavailable = fmt.Sprintf("no writes of %s since the API server started (%s) and no KMS v2 write series", strings.Join(resources, ", "), TransformationMetric)
	return ev, nil
}

type transformationWrite struct {
	resource, prefix string
	count            float64
}

// transformationWrites parses the successful to_storage series of TransformationMetric, sorted by
// resource and prefix. Other metrics are skipped without being parsed.
func transformationWrites(raw []byte) ([]transformationWrite, error) {
	var kept bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimLeft(sc.Bytes(), " \t")
		if bytes.HasPrefix(line, []byte(TransformationMetric+"{")) || bytes.HasPrefix(line, []byte(TransformationMetric+" ")) {
			kept.Write(line)
			kept.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&kept)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	f := fams[TransformationMetric]
	if f == nil {
		return nil, nil
	}
	var out []transformationWrite
	for _, m := range f.GetMetric() {
		var w transformationWrite
		var typ, status string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "resource":
				w.resource = l.GetValue()
			case "transformation_type":
				typ = l.GetValue()
			case "transformer_prefix":
				w.prefix = l.GetValue()
			case "status":
				status = l.GetValue()
			}
		}
		if typ != "to_storage" || status != "OK" {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			w.count = m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			w.count = m.GetUntyped().GetValue()
		}
		if w.count > 0 {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].resource != out[j].resource {
			return out[i].resource < out[j].resource
		}
		return out[i].prefix < out[j].prefix
	})
	return out, nil
}

// providerOfPrefix maps a transformer prefix ("k8s:enc:kms:v1:NAME:", "k8s:enc:aescbc:v1:KEY:",
// "" or "identity") to its provider and key or provider name.
func providerOfPrefix(prefix string) (storedvalue.Provider, string) {
	if prefix == "" || prefix == "identity" {
		return storedvalue.Identity, ""
	}
	for _, p := range []struct {
		prefix   string
		provider storedvalue.Provider
	}{
		{"k8s:enc:kms:v1:", storedvalue.KMSv1},
		{"k8s:enc:kms:v2:", storedvalue.KMSv2},
		{"k8s:enc:aescbc:v1:", storedvalue.AESCBC},
		{"k8s:enc:aesgcm:v1:", storedvalue.AESGCM},
		{"k8s:enc:secretbox:v1:", storedvalue.Secretbox},
	} {
		if rest, ok := strings.CutPrefix(prefix, p.prefix); ok {
			return p.provider, strings.TrimSuffix(rest, ":")
		}
	}
	return storedvalue.Provider("unknown"), prefix
}
