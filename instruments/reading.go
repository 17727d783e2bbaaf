package instruments

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Reading is a metric with the function that reads its value, so that what
// a series means and where its value comes from cannot drift apart: no list
// order pairs them. A reading reads either the snapshot S as a whole (Once)
// or each of its items T (Each), such as a GPU or a container.
type Reading[S, T any] struct {
	Metric
	Once func(s *S, e *Emit)
	Each func(x *T, e *Emit)
}

// Emit observes one reading's values. Value and Bool observe with the
// attributes of the item being read (none for Once); With adds attributes
// that tell the values of one reading apart, such as a state or a reason.
type Emit struct {
	o    metric.Observer
	inst metric.Float64Observable
	kvs  []attribute.KeyValue // the item's attributes
	set  metric.ObserveOption // kvs as a set, built once per item rather than once per reading
	buf  []attribute.KeyValue // kvs plus With's extras, reused between calls
}

// Value observes v.
func (e *Emit) Value(v float64) { e.o.ObserveFloat64(e.inst, v, e.set) }

// Bool observes 1 for true, 0 for false.
func (e *Emit) Bool(b bool) { e.Value(boolFloat(b)) }

// With observes v with extra attributes besides the item's.
func (e *Emit) With(v float64, extra ...attribute.KeyValue) {
	// NewSet sorts its argument in place and copies it, so buf can be reused.
	e.buf = append(append(e.buf[:0], e.kvs...), extra...)
	e.o.ObserveFloat64(e.inst, v, metric.WithAttributeSet(attribute.NewSet(e.buf...)))
}

// Counts observes counts[i] with key set to names[i], for counters kept in
// an array indexed as their names are (line results, refusals, levels).
func (e *Emit) Counts(key string, names []string, counts []uint64) {
	for i, n := range counts {
		e.With(float64(n), attribute.String(key, names[i]))
	}
}

// table is one exporter's readings over snapshots S, and what the snapshot's
// items are.
type table[S, T any] struct {
	readings []Reading[S, T]
	items    func(s *S) []T
	attrs    func(x *T, kvs []attribute.KeyValue) []attribute.KeyValue // appends x's attributes to kvs
}

// metrics is the table's catalogue, in the readings' order.
func (tb table[S, T]) metrics() []Metric {
	out := make([]Metric, len(tb.readings))
	for i, r := range tb.readings {
		out[i] = r.Metric
	}
	return out
}

var noAttributes = metric.WithAttributeSet(attribute.NewSet())

// register creates an instrument for every reading and one callback that,
// at each collection, takes a snapshot and runs every reading on it.
func (tb table[S, T]) register(m metric.Meter, snapshot func() *S) error {
	type bound struct {
		Reading[S, T]
		inst metric.Float64Observable
	}
	var once, each []bound
	all := make([]metric.Observable, 0, len(tb.readings))
	for _, r := range tb.readings {
		if (r.Once == nil) == (r.Each == nil) {
			return fmt.Errorf("%s: a reading needs exactly one of Once and Each", r.Name)
		}
		inst, err := observable(m, r.Metric)
		if err != nil {
			return err
		}
		all = append(all, inst)
		if r.Once != nil {
			once = append(once, bound{r, inst})
		} else {
			each = append(each, bound{r, inst})
		}
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := snapshot()
		e := Emit{o: o, set: noAttributes}
		for _, r := range once {
			e.inst = r.inst
			r.Once(s, &e)
		}
		items := tb.items(s)
		for i := range items {
			x := &items[i]
			e.kvs = tb.attrs(x, e.kvs[:0])
			e.set = metric.WithAttributeSet(attribute.NewSet(e.kvs...))
			for _, r := range each {
				e.inst = r.inst
				r.Each(x, &e)
			}
		}
		return nil
	}, all...)
	return err
}

// observable creates the asynchronous instrument d describes.
func observable(m metric.Meter, d Metric) (metric.Float64Observable, error) {
	if d.Kind == Counter {
		return m.Float64ObservableCounter(d.Name, metric.WithDescription(d.Help), metric.WithUnit(d.Unit))
	}
	return m.Float64ObservableGauge(d.Name, metric.WithDescription(d.Help), metric.WithUnit(d.Unit))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
