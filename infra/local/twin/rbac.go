package twin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// RBACFile is the RBAC of the functions, relative to the repository root: the twin applies it and
// nothing else for the functions' identity.
const RBACFile = "infra/rbac/rekey-function.yaml"

// APFFile is rekey's API Priority and Fairness configuration (FlowSchema and priority level for the
// CLI's user and the functions' role ID), relative to the repository root: the twin applies it
// unless Options.NoAPF.
const APFFile = "infra/apf/rekey-apf.yaml"

// FunctionUser is the Kubernetes user the functions are in the cluster: as on ACK, the numeric ID
// of their RAM role (FunctionRoleID), which the CS stand-in's kubeconfig authenticates as and
// infra/rbac/rekey-function.yaml binds (RoleIDPlaceholder filled in).
const FunctionUser = FunctionRoleID

// FunctionRoleID is the RAM role ID of the functions' role.
const FunctionRoleID = "300000000000000002"

// RoleIDPlaceholder stands for the functions' RAM role ID in infra/rbac/rekey-function.yaml.
const RoleIDPlaceholder = "${RAM_ROLE_ID}"

// ApplyRBAC creates every object of the RBAC or APF file at path (Namespaces, ClusterRoles,
// ClusterRoleBindings, Roles, RoleBindings, FlowSchemas, PriorityLevelConfigurations) with cs, with
// RoleIDPlaceholder replaced by roleID as a deployer does ("": left as is); an object that already
// exists is left as is. Any other kind is an error: the file is meant to grant exactly what it
// lists.
func ApplyRBAC(ctx context.Context, cs kubernetes.Interface, path, roleID string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("apply rbac: %w", err)
	}
	if roleID != "" {
		data = bytes.ReplaceAll(data, []byte(RoleIDPlaceholder), []byte(roleID))
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("apply rbac %s: %w", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("apply rbac %s: decode: %w", path, err)
		}
		var name string
		switch o := obj.(type) {
		case *corev1.Namespace:
			name = o.Name
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			name = o.Name
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			name = o.Name
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			name = o.Namespace + "/" + o.Name
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			name = o.Namespace + "/" + o.Name
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *flowcontrolv1.PriorityLevelConfiguration:
			name = o.Name
			_, err = cs.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, o, metav1.CreateOptions{})
		case *flowcontrolv1.FlowSchema:
			name = o.Name
			_, err = cs.FlowcontrolV1().FlowSchemas().Create(ctx, o, metav1.CreateOptions{})
		default:
			return fmt.Errorf("apply rbac %s: unexpected kind %s", path, gvk)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apply rbac %s: create %s %s: %w", path, gvk.Kind, name, err)
		}
	}
}

// stripComments drops YAML comment lines, so that a document of comments only counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}
