package energy

import (
	"fmt"
	"math"
	"time"
)

// Mode is which part of a device's energy a figure is.
type Mode uint8

const (
	// Dynamic is what work added over the device's idle power: shared by
	// use of the busy resource (CPU time over the machine's busy CPU time;
	// engine use over the GPU's), so the same work costs the same joules
	// whatever runs beside it.
	Dynamic Mode = iota
	// Idle is the device's idle power over the window: shared by use of the
	// whole device (CPU time over the machine's CPU time, idle included;
	// the busiest engine's use of the GPU), so a stream's share does not
	// depend on its neighbours either; what no stream uses stays
	// unattributed.
	Idle
	NumModes
)

// Modes names each Mode, for the metric attribute.
var Modes = [NumModes]string{"dynamic", "idle"}

// IdleMethod says where a device's idle power comes from.
type IdleMethod uint8

const (
	IdleNone       IdleMethod = iota // no window yet: all energy counts as dynamic
	IdleMinimum                      // too little spread in use yet: the lowest window power seen, an upper bound
	IdleEstimated                    // the intercept of window power against use over recent windows
	IdleConfigured                   // set by the operator (--energy.idle-watts.*)
	NumIdleMethods
)

// IdleMethods names each IdleMethod, for the metric attribute and /health.
var IdleMethods = [NumIdleMethods]string{"none", "minimum", "estimated", "configured"}

// IdlePower is a device's idle power as a window used it.
type IdlePower struct {
	Device  Device
	Package string // the RAPL package (socket), where sockets are charged apart
	GPU     string // the GPU's index; empty for the CPU
	Watts   float64
	Method  IdleMethod
	Windows int     // windows the estimate is made from
	StdErr  float64 // the estimate's standard error, W; 0 unless Method is IdleEstimated
}

// Idle estimation. A window's mean power against its use (busy fraction
// of the CPUs, busiest engine of a GPU) is close to a straight line on
// every machine measured (Kepler and Scaphandre model it so too); its
// intercept is the idle power. The intercept is trusted once the recent
// windows span enough use to fix the line.
const (
	idleWindows   = 600  // recent windows the line is fitted over (10 minutes at 1 s)
	idleMinFit    = 30   // windows needed before the intercept is trusted
	idleMinSpread = 0.15 // and the spread of use among them (max - min, as a fraction)
)

// IdleModel estimates one device's idle power from its recent windows
// (energy per encode's, and the docker source's for containers).
type IdleModel struct {
	Configured float64 // > 0: set by the operator, used as it is
	points     [idleWindows]idlePoint
	n, next    int
	trusted    *IdlePower // the latest estimate made with spread enough: kept while a steady load gives none
}

type idlePoint struct{ use, watts float64 }

// Add records a window of d seconds that drew joules at use (0 to 1).
func (m *IdleModel) Add(use, joules float64, d time.Duration) {
	if d <= 0 || joules < 0 || math.IsNaN(use) || math.IsInf(joules, 0) {
		return
	}
	m.points[m.next] = idlePoint{use: min(max(use, 0), 1), watts: joules / d.Seconds()}
	m.next = (m.next + 1) % idleWindows
	m.n = min(m.n+1, idleWindows)
}

// Estimate is the idle power to use now.
func (m *IdleModel) Estimate() IdlePower {
	if m.Configured > 0 {
		return IdlePower{Watts: m.Configured, Method: IdleConfigured}
	}
	if m.n == 0 {
		return IdlePower{Method: IdleNone}
	}
	pts := m.points[:m.n]
	lowest, lo, hi := math.Inf(1), math.Inf(1), math.Inf(-1)
	var su, sw float64
	for _, p := range pts {
		lowest, lo, hi = min(lowest, p.watts), min(lo, p.use), max(hi, p.use)
		su += p.use
		sw += p.watts
	}
	n := float64(len(pts))
	if len(pts) < idleMinFit || hi-lo < idleMinSpread {
		if m.trusted != nil {
			return *m.trusted
		}
		return IdlePower{Watts: lowest, Method: IdleMinimum, Windows: len(pts)}
	}
	mu, mw := su/n, sw/n
	var sxx, sxy float64
	for _, p := range pts {
		sxx += (p.use - mu) * (p.use - mu)
		sxy += (p.use - mu) * (p.watts - mw)
	}
	slope := sxy / sxx
	intercept := mw - slope*mu
	var ssr float64
	for _, p := range pts {
		r := p.watts - (intercept + slope*p.use)
		ssr += r * r
	}
	stderr := math.Sqrt(ssr/(n-2)) * math.Sqrt(1/n+mu*mu/sxx)
	// Idle power is never below zero nor above the lowest window's: a line
	// bent by noise must not charge streams for more than was drawn.
	m.trusted = &IdlePower{Watts: min(max(intercept, 0), lowest), Method: IdleEstimated, Windows: len(pts), StdErr: stderr}
	return *m.trusted
}

// IdleNotes say, for /health, which idle power each device's energy was
// split by and how sure it is.
func (s *Snapshot) IdleNotes() []string {
	var notes []string
	for _, p := range s.Idle {
		what := Devices[p.Device]
		if p.Package != "" {
			what += " package " + p.Package
		}
		if p.GPU != "" {
			what += " " + p.GPU
		}
		switch p.Method {
		case IdleConfigured:
			notes = append(notes, fmt.Sprintf("energy per encode: %s idle power %.1f W, configured", what, p.Watts))
		case IdleEstimated:
			notes = append(notes, fmt.Sprintf("energy per encode: %s idle power %.1f W ± %.1f W, estimated from %d windows", what, p.Watts, p.StdErr, p.Windows))
		case IdleMinimum:
			notes = append(notes, fmt.Sprintf("energy per encode: %s idle power taken as %.1f W, the lowest window's, until use varies enough to estimate it (%d windows so far); set --energy.idle-watts.%s if known", what, p.Watts, p.Windows, Devices[p.Device]))
		}
	}
	return notes
}
