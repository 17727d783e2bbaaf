package instruments

import (
	"context"

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

	// RAPL is the cpu-exporter's catalogue.
	RAPL = []Metric{RAPLEnergy, RAPLPower, RAPLAvailable, RAPLZones, RAPLMaxRange}
)

// RegisterRAPL registers the cpu-exporter's instruments over src's snapshot.
func RegisterRAPL(m metric.Meter, src *rapl.Source) error {
	obs, err := observables(m, RAPL)
	if err != nil {
		return err
	}
	energy, power, available, zones, maxRange := obs[0], obs[1], obs[2], obs[3], obs[4]
	return obs.register(m, func(_ context.Context, o metric.Observer) error {
		snap := src.Snapshot()
		o.ObserveFloat64(available, boolFloat(snap.Available))
		o.ObserveFloat64(zones, float64(snap.Discovered))
		for i := range snap.Zones {
			r := &snap.Zones[i]
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("package", r.Package), attribute.String("zone", r.Zone)))
			o.ObserveFloat64(energy, r.EnergyJoules, attrs)
			o.ObserveFloat64(maxRange, r.MaxRangeJoules, attrs)
			if r.HasPower {
				o.ObserveFloat64(power, r.PowerWatts, attrs)
			}
		}
		return nil
	})
}
