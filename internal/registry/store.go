package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Store writes device records: what `picogate device ...` does. It needs create/update/delete on Secrets
// in its namespace, get on Nodes (a device name must not be a real node's) and, for --delete-node and
// remove, delete on Nodes and Leases; the gateway itself only reads.
type Store struct {
	Client    kubernetes.Interface
	Namespace string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// NewStore returns a Store for namespace (default picogate-system).
func NewStore(c kubernetes.Interface, namespace string) *Store {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return &Store{Client: c, Namespace: namespace, Now: time.Now}
}

// AddRequest describes a device to register.
type AddRequest struct {
	Name   string
	Auth   AuthMode
	Source string // CIDR or address; required for AuthIP
}

// Validate checks an AddRequest, reporting every problem.
func (r AddRequest) Validate() error {
	var errs []error
	if err := ValidateName(r.Name); err != nil {
		errs = append(errs, err)
	}
	src, err := ParseSource(r.Source)
	if err != nil {
		errs = append(errs, err)
	}
	switch r.Auth {
	case AuthToken, AuthHMAC:
	case AuthIP:
		if err == nil && (!src.IsValid() || src.Bits() != src.Addr().BitLen()) {
			errs = append(errs, fmt.Errorf("--auth ip needs --ip with the device's single address (its DHCP reservation), got %q", r.Source))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown auth mode %q: want token, hmac or ip", r.Auth))
	}
	return errors.Join(errs...)
}

// Add registers devices. All are validated and checked for existing records, and for a Node of the same
// name that is not a device's (a real node: see CheckNodeName), before any is written; if a write fails, the ones written by this call are deleted again, so a batch lands whole or not at all.
func (s *Store) Add(ctx context.Context, reqs []AddRequest) ([]Credential, error) {
	var errs []error
	seen := map[string]bool{}
	for _, r := range reqs {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("device %q listed twice", r.Name))
		}
		seen[r.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := s.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	for _, r := range reqs {
		if _, err := s.get(ctx, r.Name); err == nil {
			errs = append(errs, fmt.Errorf("device %q already exists (rotate or revoke it instead)", r.Name))
			continue
		} else if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("checking device %q: %w", r.Name, err)
		}
		if err := CheckNodeName(ctx, s.Client.CoreV1().Nodes(), r.Name); errors.Is(err, ErrNotDeviceNode) {
			errs = append(errs, fmt.Errorf("device %q: a real node has that name (its Node has no label %s=true); choose another name", r.Name, NodeMarkerLabel))
		} else if err != nil {
			return nil, err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []Credential
	var written []string
	for _, r := range reqs {
		cred, err := s.create(ctx, r)
		if err != nil {
			s.rollback(written)
			return nil, fmt.Errorf("adding device %q: %w (no device of this batch was kept)", r.Name, err)
		}
		written = append(written, r.Name)
		out = append(out, cred)
	}
	return out, nil
}

func (s *Store) rollback(names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range names {
		_ = s.Client.CoreV1().Secrets(s.Namespace).Delete(ctx, SecretName(n), metav1.DeleteOptions{})
	}
}

func (s *Store) create(ctx context.Context, r AddRequest) (Credential, error) {
	src, _ := ParseSource(r.Source)
	d := &Device{Name: r.Name, Source: src, Created: s.Now()}
	cred, err := IssueCredential(d, r.Auth)
	if err != nil {
		return Credential{}, err
	}
	_, err = s.Client.CoreV1().Secrets(s.Namespace).Create(ctx, s.secret(d), metav1.CreateOptions{FieldManager: "picogate"})
	if apierrors.IsAlreadyExists(err) {
		return Credential{}, fmt.Errorf("device %q already exists", r.Name)
	}
	return cred, err
}

func (s *Store) secret(d *Device) *corev1.Secret {
	labels := map[string]string{LabelKind: KindDevice, LabelManaged: ManagedBy}
	if d.EnrolledBy != "" {
		labels[LabelEnrolledBy] = d.EnrolledBy
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName(d.Name), Namespace: s.Namespace, Labels: labels},
		Type:       SecretType,
		Data:       secretData(d),
	}
}

func (s *Store) ensureNamespace(ctx context.Context) error {
	_, err := s.Client.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	}
	if apierrors.IsForbidden(err) {
		return nil // may not read namespaces, but may still write Secrets in it: let the write decide
	}
	if err != nil {
		return fmt.Errorf("namespace %q: %w", s.Namespace, err)
	}
	return nil
}

func (s *Store) get(ctx context.Context, name string) (*corev1.Secret, error) {
	return s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, SecretName(name), metav1.GetOptions{})
}

// Info is a device as `device list` shows it.
type Info struct {
	Name       string     `json:"name"`
	Auth       AuthMode   `json:"auth"`
	Source     string     `json:"source"`
	Created    time.Time  `json:"created"`
	Revoked    *time.Time `json:"revoked,omitempty"`
	LastSeen   *time.Time `json:"lastSeen,omitempty"`
	Invalid    string     `json:"invalid,omitempty"`
	HardwareID string     `json:"hardwareId,omitempty"`
	EnrolledBy string     `json:"enrolledBy,omitempty"`
	// Pending is when an enrollment request started waiting for `device approve`; Approved when it was
	// approved (the device has not collected its credential yet).
	Pending  *time.Time `json:"pending,omitempty"`
	Approved *time.Time `json:"approved,omitempty"`
	// Reenrollment: the request waiting is a re-enrollment of a device that has a credential (which
	// keeps working until the request is approved and collected).
	Reenrollment bool `json:"reenrollment,omitempty"`
	Rotating     bool `json:"rotating,omitempty"` // a device-initiated rotation has not been used yet
}

// List returns every device record, sorted by name, with when each device's node was last seen alive
// (its Lease renewal or its Ready heartbeat, whichever is newer) if the caller may read them.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	list, err := s.Client.CoreV1().Secrets(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelKind + "=" + KindDevice})
	if err != nil {
		return nil, fmt.Errorf("listing devices in %q: %w", s.Namespace, err)
	}
	seen := s.lastSeen(ctx)
	out := make([]Info, 0, len(list.Items))
	for _, sec := range list.Items {
		if sec.Type != SecretType {
			continue
		}
		d, err := fromSecretData(sec.Data)
		if err != nil {
			out = append(out, Info{Name: string(sec.Data[keyName]), Invalid: err.Error(), Created: sec.CreationTimestamp.Time})
			continue
		}
		info := Info{Name: d.Name, Auth: d.Auth, Source: d.SourceString(), Created: d.Created,
			HardwareID: d.HardwareID, EnrolledBy: d.EnrolledBy, Rotating: d.Rotating()}
		if d.IsRevoked() {
			t := d.Revoked
			info.Revoked = &t
		}
		if e := d.Enrollment; e != nil {
			info.Pending, info.Reenrollment = &e.Requested, d.HasCredential()
			if !e.Approved.IsZero() {
				info.Approved = &e.Approved
			}
		}
		if t, ok := seen[d.Name]; ok {
			info.LastSeen = &t
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Store) lastSeen(ctx context.Context) map[string]time.Time {
	seen := map[string]time.Time{}
	if leases, err := s.Client.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{}); err == nil {
		for _, l := range leases.Items {
			if l.Spec.RenewTime != nil {
				seen[l.Name] = l.Spec.RenewTime.Time
			}
		}
	}
	if nodes, err := s.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.LastHeartbeatTime.After(seen[n.Name]) {
					seen[n.Name] = c.LastHeartbeatTime.Time
				}
			}
		}
	}
	return seen
}

// Rotate gives a token or hmac device a new credential (the old one stops working within seconds on
// every gateway) and re-enables a revoked device. A device that wants a seamless change asks the gateway
// instead (POST /picogate/v1/rotate), which keeps the old credential valid until the new one is used.
func (s *Store) Rotate(ctx context.Context, name string) (Credential, error) {
	if err := ValidateName(name); err != nil {
		return Credential{}, err
	}
	var cred Credential
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, d, err := s.load(ctx, name)
		if err != nil {
			return err
		}
		if d.Auth != AuthToken && d.Auth != AuthHMAC {
			return fmt.Errorf("device %q uses auth %s: only token devices and hmac devices have a credential to rotate", name, d.Auth)
		}
		c, err := IssueCredential(d, d.Auth)
		if err != nil {
			return err
		}
		d.Revoked = time.Time{}
		sec.Data = secretData(d)
		if _, err := s.Client.CoreV1().Secrets(s.Namespace).Update(ctx, sec, metav1.UpdateOptions{FieldManager: "picogate"}); err != nil {
			return err
		}
		cred = c
		return nil
	})
	if err != nil {
		return Credential{}, fmt.Errorf("rotating device %q: %w", name, err)
	}
	return cred, nil
}

// Revoke marks a device revoked: every gateway refuses it within seconds and ends its open watches. The
// record stays (so `device list` shows it and `device rotate` can re-enable it). With deleteNode, the
// device's Node and Lease are deleted too, if the Node is a device's (DeleteDeviceNode); the outcome
// says what happened to the Node.
func (s *Store) Revoke(ctx context.Context, name string, deleteNode bool) (NodeOutcome, error) {
	if err := ValidateName(name); err != nil {
		return NodeAbsent, err
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, d, err := s.load(ctx, name)
		if err != nil {
			return err
		}
		if d.IsRevoked() {
			return nil
		}
		d.Revoked = s.Now()
		sec.Data = secretData(d)
		_, err = s.Client.CoreV1().Secrets(s.Namespace).Update(ctx, sec, metav1.UpdateOptions{FieldManager: "picogate"})
		return err
	})
	if err != nil {
		return NodeAbsent, fmt.Errorf("revoking device %q: %w", name, err)
	}
	if !deleteNode {
		return NodeAbsent, nil
	}
	out, err := s.deleteNode(ctx, name)
	if err != nil {
		return out, fmt.Errorf("device %q revoked, but: %w", name, err)
	}
	return out, nil
}

// deleteNode deletes a device's Node and Lease with the operator's own client.
func (s *Store) deleteNode(ctx context.Context, name string) (NodeOutcome, error) {
	return DeleteDeviceNode(ctx, s.Client.CoreV1().Nodes(), s.Client, name)
}

func (s *Store) load(ctx context.Context, name string) (*corev1.Secret, *Device, error) {
	sec, err := s.get(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("no device %q in namespace %q", name, s.Namespace)
	}
	if err != nil {
		return nil, nil, err
	}
	d, err := fromSecretData(sec.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("device record %q is invalid: %w", name, err)
	}
	return sec, d, nil
}
