package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// App is an application built into the firmware. A pod "runs" it by naming
// its image; Run is called once per container start, in its own goroutine.
//
// Run must return when ctx is done (the pod was deleted or the agent is
// stopping); returning nil or ctx's error then counts as a clean exit.
// Returning nil before that means the program completed (exit code 0); an
// error means it failed (exit code 1, the error text as the message).
type App interface {
	Run(ctx context.Context, c Container) error
}

// AppFunc adapts a function to App.
type AppFunc func(ctx context.Context, c Container) error

// Run calls f.
func (f AppFunc) Run(ctx context.Context, c Container) error { return f(ctx, c) }

// Container is what an App is told about the container it runs as.
type Container struct {
	Namespace string   // the pod's namespace
	Pod       string   // the pod's name
	Name      string   // the container's name
	Image     string   // the image as written in the pod spec
	Args      []string // the container's args (command is ignored)
	Env       []EnvVar // the container's env entries that have a literal value
	Restart   int      // how many times this container was restarted before
	Log       *slog.Logger
}

// EnvVar is one literal environment variable of a container.
type EnvVar struct{ Name, Value string }

// Getenv returns the value of the named env entry, or "".
func (c Container) Getenv(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// Built-in example images, for demos and tests.
const (
	BlinkImage  = "picogate.io/apps/blink"
	SensorImage = "picogate.io/apps/sensor"
)

// BuiltinApps returns a fresh registry with the two example apps, blink and
// sensor. A firmware adds its own apps to the map.
func BuiltinApps() map[string]App {
	return map[string]App{
		BlinkImage:  AppFunc(blink),
		SensorImage: AppFunc(sensor),
	}
}

// exampleArgs are the flags both example apps take, so a pod spec can make
// them finish or fail on purpose:
//
//	--period=DURATION  tick period (default 1s)
//	--count=N          exit 0 after N ticks (default: run until stopped)
//	--fail-after=N     fail after N ticks
type exampleArgs struct {
	period    time.Duration
	count     int
	failAfter int
}

func parseExampleArgs(args []string) (exampleArgs, error) {
	a := exampleArgs{period: time.Second}
	for _, arg := range args {
		k, v, ok := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !ok {
			return a, fmt.Errorf("argument %q: want --name=value", arg)
		}
		var err error
		switch k {
		case "period":
			a.period, err = time.ParseDuration(v)
			if err == nil && a.period <= 0 {
				err = errors.New("must be positive")
			}
		case "count":
			a.count, err = strconv.Atoi(v)
		case "fail-after":
			a.failAfter, err = strconv.Atoi(v)
		default:
			err = errors.New("unknown argument")
		}
		if err != nil {
			return a, fmt.Errorf("argument %q: %w", arg, err)
		}
	}
	return a, nil
}

// tick calls fn every period until ctx is done or the args' count or failure
// point is reached.
func tick(ctx context.Context, c Container, fn func(n int)) error {
	a, err := parseExampleArgs(c.Args)
	if err != nil {
		return err
	}
	t := time.NewTicker(a.period)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fn(n)
		if a.failAfter > 0 && n >= a.failAfter {
			return fmt.Errorf("failing after %d ticks as asked", n)
		}
		if a.count > 0 && n >= a.count {
			return nil
		}
	}
}

// blink toggles a (virtual) LED each tick.
func blink(ctx context.Context, c Container) error {
	led := false
	return tick(ctx, c, func(n int) {
		led = !led
		c.Log.Debug("blink", "led", led, "tick", n)
	})
}

// sensor "reads" a temperature each tick: a deterministic saw-tooth around
// 21 °C, since the simulated board has no sensor.
func sensor(ctx context.Context, c Container) error {
	return tick(ctx, c, func(n int) {
		milli := 21000 + (n%10)*50
		c.Log.Debug("sensor", "temp_mC", milli, "tick", n)
	})
}
