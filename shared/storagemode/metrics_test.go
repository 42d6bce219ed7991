package storagemode

import (
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

const metricsText = `# HELP apiserver_storage_transformation_operations_total [ALPHA] Total number of transformations.
# TYPE apiserver_storage_transformation_operations_total counter
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="from_storage",transformer_prefix="k8s:enc:kms:v2:alibaba-kms:"} 40
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="to_storage",transformer_prefix="k8s:enc:kms:v1:alibaba-kms-v1:"} 12
apiserver_storage_transformation_operations_total{resource="secrets",status="Unavailable",transformation_type="to_storage",transformer_prefix="k8s:enc:kms:v2:alibaba-kms:"} 1
apiserver_storage_transformation_operations_total{resource="configmaps",status="OK",transformation_type="to_storage",transformer_prefix=""} 3
apiserver_storage_transformation_operations_total{resource="widgets.example.com",status="OK",transformation_type="to_storage",transformer_prefix="k8s:enc:aescbc:v1:key2:"} 7
# HELP apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds [ALPHA] x
# TYPE apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds gauge
apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds{apiserver_id_hash="sha256:aa",key_id_hash="sha256:bb",provider_name="alibaba-kms",transformation_type="to_storage"} 1.7e+09
`

func TestFromMetrics(t *testing.T) {
	ev, err := FromMetrics([]byte(metricsText), []string{"secrets", "configmaps", "widgets.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Observation{}
	for _, o := range ev.Observations {
		got[o.Resource] = o
	}
	if len(ev.Observations) != 3 || ev.Unavailable != "" {
		t.Fatalf("observations %+v, unavailable %q", ev.Observations, ev.Unavailable)
	}
	// The failed KMS v2 write and the from_storage series are not writers.
	if o := got["secrets"]; o.Provider != storedvalue.KMSv1 || o.KeyName != "alibaba-kms-v1" || !strings.Contains(o.Detail, "12 writes") {
		t.Errorf("secrets: %+v", o)
	}
	if o := got["configmaps"]; o.Provider != storedvalue.Identity {
		t.Errorf("configmaps: %+v", o)
	}
	if o := got["widgets.example.com"]; o.Provider != storedvalue.AESCBC || o.KeyName != "key2" {
		t.Errorf("widgets: %+v", o)
	}
	d, err := Decide(Inputs{Requested: "auto", ServerVersion: "v1.37.2", Metrics: &ev})
	if err != nil || d.Strategy != "annotate" {
		t.Fatalf("decision %+v, %v", d, err)
	}
}

func TestFromMetricsKMSv2SeriesOnly(t *testing.T) {
	// No transformation series for the targets: the KMS v2 write series are the evidence.
	ev, err := FromMetrics([]byte(metricsText), []string{"deployments.apps"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Observations) != 1 || ev.Observations[0].Resource != AnyResource || ev.Observations[0].Provider != storedvalue.KMSv2 || ev.Observations[0].KeyName != "alibaba-kms" {
		t.Fatalf("observations %+v", ev.Observations)
	}
}

func TestFromMetricsNothing(t *testing.T) {
	ev, err := FromMetrics([]byte("# HELP up x\nup 1\n"), []string{"secrets"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Observations) != 0 || !strings.Contains(ev.Unavailable, "no writes of secrets") {
		t.Fatalf("%+v", ev)
	}
	d, err := Decide(Inputs{Requested: "auto", ServerVersion: "v1.37.2", Metrics: &ev})
	if err != nil || d.Rule != SourceVersion || len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "metrics: no writes of secrets") {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if _, err := FromMetrics([]byte("apiserver_storage_transformation_operations_total{resource=\"secrets\" 1\n"), []string{"secrets"}); err == nil {
		t.Error("malformed series: want an error")
	}
}
