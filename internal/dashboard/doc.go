// Package dashboard is the fleet dashboard on the admin port: one page that shows every board at a
// glance, live — the gateway's view (last request, refusals with the rule that refused them, rate
// limiting, auth mode) beside the Kubernetes view (Node Ready and conditions, Lease age, pods bound).
//
// The gateway calls Record once per finished request. Record takes no lock shared between devices and
// allocates nothing for a path, reason or user agent it has seen before: each device has its own
// fixed-size rings (the last requests and the last refusals), filled in place under that device's own
// mutex, whose entries point at texts stored once for the whole fleet (texts), and the fleet-wide
// counters of the current interval are atomics. Memory is bounded by construction: a device's state is
// allocated on its first request (the refusals ring on its first refusal), at a fixed size
// (DeviceBytes), only for devices in the registry, and the texts table has a fixed bound.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary (no network at run time, no inline
// script, CSP default-src 'self'). Every string a device controls is sent as JSON and rendered with
// textContent. The fleet table is filtered, sorted and paged on the server, and its live stream sends
// only the rows of the visible page that changed, so the cost of an update does not grow with the fleet.
package dashboard
