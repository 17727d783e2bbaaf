package instruments

import (
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

var packageZone = []string{"package", "zone"}

// The cpu-exporter's metrics. The first two are the deployment guide's; the
// next two keep the names of the original exporter.
var (
	RAPLEnergy    = Metric{Name: "rapl_energy_joules_total", Unit: "J", Kind: Counter, Attributes: packageZone, Help: "Energy consumed by the RAPL zone: the kernel's reading at start plus every wrap-corrected change since."}
	RAPLPower     = Metric{Name: "rapl_power_watts", Unit: "W", Kind: Gauge, Attributes: packageZone, Help: "Mean power of the RAPL zone over the latest sampling window."}
	RAPLAvailable = Metric{Name: "rapl_available", Kind: Gauge, Help: "Whether RAPL energy counters are readable now (1) or not (0; /health says why)."}
	RAPLZones     = Metric{Name: "rapl_zones_discovered", Kind: Gauge, Help: "RAPL zones found under powercap, each physical domain counted once."}
	RAPLMaxRange  = Metric{Name: "rapl_max_energy_range_joules", Unit: "J", Kind: Gauge, Attributes: packageZone, Help: "Value at which the zone's energy counter wraps to zero (max_energy_range_uj)."}

	RAPLImplausible = Metric{Name: "rapl_implausible_readings_total", Kind: Counter, Attributes: packageZone, Help: fmt.Sprintf("Readings of the zone's energy counter left out of rapl_energy_joules_total: above max_energy_range_uj, or a change more than %d W could count in the time since the previous reading (/health names the values).", rapl.MaxPlausibleWatts)}
)

// raplTable reads each metric from the snapshot or from each zone in it.
var raplTable = table[rapl.Snapshot, rapl.ZoneReading]{
	readings: []Reading[rapl.Snapshot, rapl.ZoneReading]{
		{Metric: RAPLEnergy, Each: func(z *rapl.ZoneReading, e *Emit) { e.Value(z.EnergyJoules) }},
		{Metric: RAPLPower, Each: func(z *rapl.ZoneReading, e *Emit) {
			if z.HasPower {
				e.Value(z.PowerWatts)
			}
		}},
		{Metric: RAPLAvailable, Once: func(s *rapl.Snapshot, e *Emit) { e.Bool(s.Available) }},
		{Metric: RAPLZones, Once: func(s *rapl.Snapshot, e *Emit) { e.Value(float64(s.Discovered)) }},
		{Metric: RAPLMaxRange, Each: func(z *rapl.ZoneReading, e *Emit) { e.Value(z.MaxRangeJoules) }},
		{Metric: RAPLImplausible, Each: func(z *rapl.ZoneReading, e *Emit) { e.Value(float64(z.Implausible)) }},
	},
	items: func(s *rapl.Snapshot) []rapl.ZoneReading { return s.Zones },
	attrs: func(z *rapl.ZoneReading, kvs []attribute.KeyValue) []attribute.KeyValue {
		return append(kvs, attribute.String("package", z.Package), attribute.String("zone", z.Zone))
	},
}

// RAPL is the cpu-exporter's catalogue.
var RAPL = raplTable.metrics()

// RegisterRAPL registers the cpu-exporter's instruments over src's snapshot.
func RegisterRAPL(m metric.Meter, src interface{ Snapshot() *rapl.Snapshot }) error {
	return raplTable.register(m, src.Snapshot)
}
