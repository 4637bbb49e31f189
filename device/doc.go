// Package device turns a microcontroller (or a simulation of one) into a
// well-behaved Kubernetes node behind a picogate gateway.
//
// An Agent registers its Node with honest MCU capacity and the taint
// picogate.io/mcu=true:NoSchedule, renews its Lease in kube-node-lease every
// 10 s, patches node status on change and at least once a minute, lists and
// watches the pods bound to it, runs those whose image names an App built
// into the firmware, and reports their status as a kubelet would.
//
// The package uses the standard library only and is written for TinyGo: no
// encoding/json or reflection on the request path; request bodies are
// appended to reused byte slices and responses are read with a small JSON
// scanner that looks up only the fields it needs. docs/device-protocol.md
// describes the same requests for firmware written in C or MicroPython.
//
//	a, err := device.New(device.Config{
//		Name:    "pico-1",
//		Gateway: "http://192.168.1.10:6080",
//		Token:   token,
//		Apps:    device.BuiltinApps(),
//	})
//	if err != nil { ... }
//	err = a.Run(ctx)
package device
