// Package sim runs a fleet of virtual devices in one process against a
// picogate gateway: in agent mode each is a real device.Agent, in firmware
// mode each reproduces the reference Pico W firmware's wire behaviour byte
// for byte (a new connection per request, hand-written HTTP/1.1, one 4096-byte
// response buffer) and counts the responses that firmware could not read.
// Devices run with given credentials, or enroll themselves first (Enrollment:
// hmac with key agreement, each board deriving its own key). cmd/picosim
// wires flags to it.
package sim
