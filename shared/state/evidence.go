package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Evidence records (package evidence writes them through the Store): one immutable ConfigMap each
// in the namespace, labelled with the cluster, holding the record's JSON.
const (
	// DefaultEvidenceKeep is how many evidence records per cluster are kept.
	DefaultEvidenceKeep = 100
	keyEvidence         = "record.json"
	evidenceComponent   = "evidence"
	endedAtAnnotation   = "rekey.dev/ended-at"
	recordIDAnnotation  = "rekey.dev/record-id"
	// stamp is a fixed-width UTC time, so that the annotation sorts as the time does.
	stamp = "2006-01-02T15:04:05.000000000Z"
)

// ErrNotPruned wraps the error of AddEvidence when the record was kept but the oldest records
// could not be listed or deleted.
var ErrNotPruned = errors.New("evidence record kept, older records not pruned")

// StoredRecord is one evidence record as stored.
type StoredRecord struct {
	// ID is the record's ID; EndedAt when the job it records ended.
	ID      string
	EndedAt time.Time
	// Body is the record's JSON.
	Body []byte
}

// EvidenceName returns the name of the ConfigMap holding record id of this cluster.
func (s *Store) EvidenceName(id string) string {
	sum := sha256.Sum256([]byte(s.cluster + "\x00" + id))
	return "rekey-evidence-" + hex.EncodeToString(sum[:10])
}

// AddEvidence stores a record as an immutable ConfigMap (the API server refuses to change it once
// written; writing the same ID again is a no-op) and deletes the oldest records of the cluster
// beyond keep (0: DefaultEvidenceKeep).
func (s *Store) AddEvidence(ctx context.Context, id string, endedAt time.Time, body []byte, keep int) error {
	if keep <= 0 {
		keep = DefaultEvidenceKeep
	}
	immutable := true
	labels := s.labels(evidenceComponent)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: s.EvidenceName(id), Namespace: s.namespace, Labels: labels,
			Annotations: map[string]string{endedAtAnnotation: endedAt.UTC().Format(stamp), recordIDAnnotation: id}},
		Immutable: &immutable,
		Data:      map[string]string{keyEvidence: string(body)},
	}
	err := s.create(ctx, "configmaps", cm.Name, func(ctx context.Context) error {
		_, err := s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{FieldManager: s.fieldManager})
		return err
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("evidence record %s: %w", id, err)
	}
	if err := s.pruneEvidence(ctx, keep); err != nil {
		return fmt.Errorf("%w: %w", ErrNotPruned, err)
	}
	return nil
}

// Evidence returns the cluster's evidence records, oldest first.
func (s *Store) Evidence(ctx context.Context) ([]StoredRecord, error) {
	list, err := s.evidenceList(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]StoredRecord, 0, len(list))
	for _, cm := range list {
		at, _ := time.Parse(stamp, cm.Annotations[endedAtAnnotation])
		out = append(out, StoredRecord{ID: cm.Annotations[recordIDAnnotation], EndedAt: at, Body: []byte(cm.Data[keyEvidence])})
	}
	return out, nil
}

func (s *Store) evidenceList(ctx context.Context) ([]corev1.ConfigMap, error) {
	sel := metav1.LabelSelector{MatchLabels: s.labels(evidenceComponent)}
	var list *corev1.ConfigMapList
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		list, err = s.client.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(&sel)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list evidence records in %s: %w", s.namespace, s.denied(err, "list", "configmaps"))
	}
	items := list.Items
	sort.SliceStable(items, func(i, j int) bool {
		return items[i].Annotations[endedAtAnnotation] < items[j].Annotations[endedAtAnnotation]
	})
	return items, nil
}

// pruneEvidence deletes the oldest records beyond keep.
func (s *Store) pruneEvidence(ctx context.Context, keep int) error {
	items, err := s.evidenceList(ctx)
	if err != nil {
		return err
	}
	for len(items) > keep {
		name := items[0].Name
		err := s.call(ctx, func(ctx context.Context) error {
			return s.client.CoreV1().ConfigMaps(s.namespace).Delete(ctx, name, metav1.DeleteOptions{})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("prune evidence record %s/%s: %w", s.namespace, name, s.denied(err, "delete", "configmaps"))
		}
		items = items[1:]
	}
	return nil
}
