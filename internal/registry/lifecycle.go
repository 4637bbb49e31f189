package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Approve lets a device's enrollment request through: its next poll of POST /picogate/v1/enroll
// collects the credential.
func (s *Store) Approve(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := s.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("no device %q in namespace %q", name, s.Namespace)
		}
		if err != nil {
			return err
		}
		e := r.Device.Enrollment
		if e == nil {
			return fmt.Errorf("device %q has no enrollment waiting for approval", name)
		}
		if !e.Approved.IsZero() {
			return nil
		}
		e.Approved = s.Now()
		return s.Update(ctx, r)
	})
	if err != nil {
		return fmt.Errorf("approving device %q: %w", name, err)
	}
	return nil
}

// Remove deregisters a device for good: it is revoked first (every gateway refuses it within seconds and
// ends its open watches), then its Node and its Lease are deleted if the Node is the device's
// (DeleteDeviceNode: a real node that has the name is left alone), then its record. If a step fails the
// device stays revoked, and running Remove again finishes the job. The outcome says what happened to
// the Node.
func (s *Store) Remove(ctx context.Context, name string) (NodeOutcome, error) {
	return s.RemoveWith(ctx, name, s.deleteNode)
}

// RemoveWith is Remove with the Node and Lease handled by deleteNode: the gateway deletes them as the
// device itself, so the API server's NodeRestriction confines the deletion to that one node.
func (s *Store) RemoveWith(ctx context.Context, name string, deleteNode func(ctx context.Context, name string) (NodeOutcome, error)) (NodeOutcome, error) {
	if _, err := s.Revoke(ctx, name, false); err != nil {
		return NodeAbsent, err
	}
	out, err := deleteNode(ctx, name)
	if err != nil {
		return out, fmt.Errorf("removing device %q (it stays revoked; run remove again): %w", name, err)
	}
	err = s.Client.CoreV1().Secrets(s.Namespace).Delete(ctx, SecretName(name), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return out, fmt.Errorf("removing device %q: deleting its record (it stays revoked): %w", name, err)
	}
	return out, nil
}

// PromoteNext makes a device's pending rotation its credential, once the device has used it; used is the
// token hash or key the device authenticated with. It reports whether it changed the record: nothing
// changes if that is not (or no longer) the pending rotation, so several gateway replicas may all call it.
func (s *Store) PromoteNext(ctx context.Context, name string, used []byte) (bool, error) {
	promoted := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := s.Get(ctx, name)
		if err != nil {
			return err
		}
		if promoted = promoteNext(r.Device, used); !promoted {
			return nil
		}
		return s.Update(ctx, r)
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("promoting the rotated credential of device %q: %w", name, err)
	}
	return promoted, nil
}

// CancelEnrollments drops the enrollment requests made with the enrollment token tokenID (whose hash is
// tokenHash) that are still waiting for approval or collection: a device that never had a credential is
// deleted, an existing device keeps its current credential. It returns the names it cancelled.
func (s *Store) CancelEnrollments(ctx context.Context, tokenID string, tokenHash [sha256.Size]byte) ([]string, error) {
	list, err := s.Client.CoreV1().Secrets(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelKind + "=" + KindDevice + "," + LabelEnrolledBy + "=" + tokenID})
	if err != nil {
		return nil, fmt.Errorf("listing enrollments of token %s: %w", tokenID, err)
	}
	var out []string
	var errs []error
	for i := range list.Items {
		sec := &list.Items[i]
		d, err := fromSecretData(sec.Data)
		if err != nil || d.Enrollment == nil || d.Enrollment.TokenHash != tokenHash {
			continue
		}
		r := &Record{Device: d, secret: sec}
		if d.HasCredential() && !d.IsRevoked() {
			d.Enrollment = nil
			err = s.Update(ctx, r)
		} else {
			err = s.Delete(ctx, r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cancelling the enrollment of %q: %w", d.Name, err))
			continue
		}
		out = append(out, d.Name)
	}
	return out, errors.Join(errs...)
}
