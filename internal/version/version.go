// Package version holds the build's version, set by the linker (-X) from `git describe`.
package version

// Version is the picogate release; "dev" for builds outside `make build`.
var Version = "dev"
