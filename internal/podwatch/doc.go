// Package podwatch serves every device's watch of its own pods from one watch of the API server.
//
// A board in agent mode lists the pods bound to its node (GET /api/v1/pods?fieldSelector=
// spec.nodeName=NAME) and then watches them from the list's resourceVersion. Relayed one for one, each
// such watch holds an HTTP/2 stream to the API server, its goroutine, buffers and request objects in the
// gateway (about 20 KB) and a watcher in the API server: 5,000 boards, 5,000 watches. The Hub instead
// keeps one watch of every scheduled pod (spec.nodeName!=""), made with the gateway's own credential by a
// client-go reflector, and answers each device's watch from it, the way the API server's own watch cache
// answers its watchers:
//
//   - What a device gets is what the API server would send it: each pod is held as the API server
//     encoded it (less managedFields and kubectl's last-applied annotation, which the gateway's
//     compaction removes from every device answer anyway), and events are framed as the API server
//     frames them. A watch from resourceVersion X gets every event of its node after X, in order.
//     "0" starts with a synthetic ADDED event per current pod, "" too, once the shared watch has caught
//     up with the API server's current revision (the API server's "most recent"). History is a bounded
//     window (Config.MaxEvents, MaxEventBytes); a watch from before what the window holds for its node
//     gets the API server's answer: one ERROR event with a 410 Expired Status, and the device lists again.
//     Bookmarks (allowWatchBookmarks) come every minute and 2 seconds before the watch's timeout, as the
//     API server's, with the newest resourceVersion the shared watch has seen; timeoutSeconds ends the
//     stream cleanly.
//   - It never widens what a device may see. Only a watch of the device's own node's pods is served
//     (fieldSelector exactly spec.nodeName=NAME, NAME the device's own), and only when the API server
//     allowed that device, impersonated as its node, to list them within Config.AuthzWindow: its own
//     list forwarded and answered 200 (Observe), or a probe the Hub makes as the device (a LIST with
//     limit=1, resourceVersion=0 and the same selector). A device revoked, rotated or removed loses its
//     window at once (Forget), and the gateway ends its open watches.
//   - A watch from a resourceVersion newer than the shared watch has seen — a device's fresh list in a
//     quiet cluster — is served once a list made with the gateway's credential after the watch arrived
//     shows the API server issued it; such lists are shared by every watch waiting at the time, at most
//     ten a second (fresh.go).
//   - Nothing is half served. A watch the Hub cannot answer exactly — any other query parameter, a
//     non-JSON Accept, the shared watch not synced, forbidden (the gateway's RBAC lacks cluster-wide
//     pods list/watch) or broken, a resourceVersion newer than the API server's — is relayed to the API
//     server as before. When the shared watch breaks for longer than Config.MaxDown, or must list again,
//     every served watch ends (after a relist cleanly, after a break with an ERROR 503 event), and the
//     devices watch again.
//
// A served watch costs its handler's goroutine, which the gateway has anyway, and about 200 bytes: its
// cursor (a resourceVersion), a wake-up channel and a timer. Events are shared: every watcher of a node
// writes the same bytes.
package podwatch
