package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/apf"
)

// apfFile is rekey's API Priority and Fairness configuration, as shipped.
const apfFile = "../../infra/apf/rekey-apf.yaml"

// TestAPFPutsRekeyInItsOwnPriorityLevel applies infra/apf/rekey-apf.yaml as shipped (the role ID
// filled in as the deploy guide says) and asks the API server how it classifies requests: the
// CLI's user and the functions' RAM role ID land in rekey's FlowSchema and priority level (the
// X-Kubernetes-PF-* answer headers carry their UIDs), another client does not. It proves the
// objects are valid and match rekey's identities; it does not measure fairness (the bench does).
func TestAPFPutsRekeyInItsOwnPriorityLevel(t *testing.T) {
	const other = "someone-else"
	c, _ := aescbcCluster(t, controlplane.User{Name: cliUser}, controlplane.User{Name: functionUser}, controlplane.User{Name: other})
	applyRBACYAML(t, c, apfFile, nil)
	cs := typed(t, c)
	ctx := context.Background()
	fs, err := cs.FlowcontrolV1().FlowSchemas().Get(ctx, "rekey", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := cs.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, "rekey", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The API server's APF controller picks new objects up asynchronously: ask until rekey's
	// answer names them (or a minute passes).
	deadline := time.Now().Add(time.Minute)
	for _, user := range []string{cliUser, functionUser} {
		for {
			gotFS, gotPL := classify(t, c.RestConfig(user))
			if gotFS == string(fs.UID) && gotPL == string(pl.UID) {
				t.Logf("%s: FlowSchema rekey (%s), priority level rekey (%s)", user, gotFS, gotPL)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: classified into FlowSchema %q and priority level %q, want rekey's %s and %s", user, gotFS, gotPL, fs.UID, pl.UID)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	gotFS, gotPL := classify(t, c.RestConfig(other))
	if gotFS == "" || gotFS == string(fs.UID) || gotPL == string(pl.UID) {
		t.Fatalf("%s: classified into FlowSchema %q and priority level %q: want another client's, not rekey's", other, gotFS, gotPL)
	}
}

// classify makes one request as cfg's user and returns the FlowSchema and priority level UIDs the
// API server's answer names.
func classify(t *testing.T, cfg *rest.Config) (flowSchemaUID, priorityLevelUID string) {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/version", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatal(fmt.Errorf("GET /version: %s", resp.Status))
	}
	return resp.Header.Get(apf.HeaderFlowSchemaUID), resp.Header.Get(apf.HeaderPriorityLevelUID)
}
