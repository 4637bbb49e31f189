package registry

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Record is a device record read from the API server, with the resourceVersion it was read at, so a
// change written back is refused (a conflict) if anyone changed the record in between. This is what
// makes enrollment and rotation safe with several gateway replicas writing.
type Record struct {
	Device *Device
	secret *corev1.Secret
}

// ErrNotFound is returned by Get for a name with no record.
var ErrNotFound = errors.New("no such device")

// Get reads device name's record straight from the API server (not a cache).
func (s *Store) Get(ctx context.Context, name string) (*Record, error) {
	sec, err := s.get(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("device %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading device %q: %w", name, err)
	}
	d, err := fromSecretData(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("device record %q is invalid: %w", name, err)
	}
	return &Record{Device: d, secret: sec}, nil
}

// ErrExists is returned by Create when the name is taken: the API server's create is the arbiter when
// two devices ask for one name at once.
var ErrExists = errors.New("device already exists")

// Create writes a new record for d.
func (s *Store) Create(ctx context.Context, d *Device) error {
	_, err := s.Client.CoreV1().Secrets(s.Namespace).Create(ctx, s.secret(d), metav1.CreateOptions{FieldManager: "picogate"})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("device %q: %w", d.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating device %q: %w", d.Name, err)
	}
	return nil
}

// Update writes r.Device back. It fails with a conflict (apierrors.IsConflict) if the record changed
// since it was read; callers re-read and decide again (retry.RetryOnConflict).
func (s *Store) Update(ctx context.Context, r *Record) error {
	sec := r.secret.DeepCopy()
	sec.Data = secretData(r.Device)
	if r.Device.EnrolledBy != "" {
		if sec.Labels == nil {
			sec.Labels = map[string]string{}
		}
		sec.Labels[LabelEnrolledBy] = r.Device.EnrolledBy
	}
	out, err := s.Client.CoreV1().Secrets(s.Namespace).Update(ctx, sec, metav1.UpdateOptions{FieldManager: "picogate"})
	if err != nil {
		return err
	}
	r.secret = out
	return nil
}

// Delete deletes the record, only if it is still the version r was read at.
func (s *Store) Delete(ctx context.Context, r *Record) error {
	uid, rv := r.secret.UID, r.secret.ResourceVersion
	err := s.Client.CoreV1().Secrets(s.Namespace).Delete(ctx, r.secret.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
