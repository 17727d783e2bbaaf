package encodeprofile

import "strings"

// Source is the place a value came from; a lower one is trusted more.
type Source uint8

const (
	FromNowhere Source = iota // no place said
	FromURL                   // the ingest URL's query, as the caller declared it
	FromStderr                // ffmpeg's stderr header: what ffmpeg set up
	FromCmdline               // the linked process's command line, as far as it is understood
)

// String is the value of the source label: "url", "stderr", "cmdline", or
// "none".
func (s Source) String() string {
	switch s {
	case FromURL:
		return "url"
	case FromStderr:
		return "stderr"
	case FromCmdline:
		return "cmdline"
	}
	return None
}

// Value is one bounded label and the place that gave it.
type Value struct {
	Label string
	From  Source
}

func (v Value) known() bool { return v.Label != "" && v.Label != Unknown }

// Output is one video output stream (a rung), in ffmpeg's order: by output
// file, then by stream index. Numbers are 0 where unknown.
type Output struct {
	Encoder    string  // bounded, as Profile.Encoder
	Preset     string  // bounded, as Profile.Preset
	Width      int     // after filters
	Height     int     //
	FPS        float64 // frames per second after filters
	BitrateBPS float64 // the target bit rate, where one was set; never a label
	CRF        float64 // -crf, when HasCRF (command line only); never a label
	HasCRF     bool    //

	rateOf int // 1+the input whose rate this output keeps unchanged, when FPS is unknown (command line only)
}

// PixelsPerFrame is W × H, when both are known.
func (o Output) PixelsPerFrame() (float64, bool) {
	if o.Width <= 0 || o.Height <= 0 || o.Width > MaxDimension || o.Height > MaxDimension {
		return 0, false
	}
	return float64(o.Width) * float64(o.Height), true
}

// Profile is a stream's encode profile. Every Label is in its bounded
// domain; nothing in it comes from a URL, path, metadata or log text.
type Profile struct {
	Encoder Value // one of Encoders, Mixed, Other, Unknown
	Preset  Value // from the encoder's vocabulary (Presets), Default, Other, Unknown
	Ladder  Value // canonical "WxH@fps,..." rungs, Other, Unknown
	Hwaccel Value // one of Hwaccels, None, Other, Unknown

	// Outputs are the video outputs behind Ladder (from Ladder.From), in
	// ffmpeg's order; the first is the one whose frames ffmpeg's frame=
	// counts.
	Outputs []Output
}

// PixelsPerFrame is how many pixels every encoding rung together encodes
// for each frame ffmpeg's frame= counts (its first video output): the sum
// over the outputs of W × H × (the output's rate / the first output's
// rate). Stream copies encode nothing and count nothing. False when any
// part is unknown.
func (p *Profile) PixelsPerFrame() (float64, bool) {
	if len(p.Outputs) == 0 {
		return 0, false
	}
	first := p.Outputs[0]
	var sum float64
	for i, o := range p.Outputs {
		if o.Encoder == Copy {
			continue
		}
		px, ok := o.PixelsPerFrame()
		if !ok {
			return 0, false
		}
		switch {
		case i == 0:
			sum += px
		case fpsKnown(o.FPS) && fpsKnown(first.FPS):
			sum += px * o.FPS / first.FPS
		case !fpsKnown(o.FPS) && !fpsKnown(first.FPS) && o.rateOf > 0 && o.rateOf == first.rateOf:
			sum += px // both keep the same input's rate
		default:
			return 0, false
		}
	}
	return sum, true
}

// fpsKnown: a rate in the label's domain, 0.01 (its precision) to MaxFPS.
func fpsKnown(f float64) bool { return f >= 0.01 && f <= MaxFPS }

// Sources names the places that gave the Encoder, Preset and Ladder, in
// order of trust and joined by "+" ("url", "stderr+cmdline"), or "none": at
// most seven values, for a source label.
func (p *Profile) Sources() string {
	var parts []string
	for _, s := range []Source{FromURL, FromStderr, FromCmdline} {
		for _, v := range []Value{p.Encoder, p.Preset, p.Ladder} {
			if v.known() && v.From == s {
				parts = append(parts, s.String())
				break
			}
		}
	}
	if len(parts) == 0 {
		return None
	}
	return strings.Join(parts, "+")
}

// Merge combines what each place said: each field from the most trusted
// place that knows it (URL, then stderr, then command line), Outputs with
// the Ladder. A field no place knows is Unknown.
func Merge(profiles ...Profile) Profile {
	pick := func(get func(*Profile) Value) (Value, int) {
		best, at := Value{Label: Unknown}, -1
		for i := range profiles {
			v := get(&profiles[i])
			if v.known() && (at < 0 || rank(v.From) < rank(best.From)) {
				best, at = v, i
			}
		}
		return best, at
	}
	var m Profile
	m.Encoder, _ = pick(func(p *Profile) Value { return p.Encoder })
	m.Preset, _ = pick(func(p *Profile) Value { return p.Preset })
	m.Hwaccel, _ = pick(func(p *Profile) Value { return p.Hwaccel })
	var at int
	if m.Ladder, at = pick(func(p *Profile) Value { return p.Ladder }); at >= 0 {
		m.Outputs = append([]Output(nil), profiles[at].Outputs...)
	}
	return m
}

func rank(s Source) int {
	if s == FromNowhere {
		return int(FromCmdline) + 1
	}
	return int(s)
}

// fromOutputs derives the labels from outputs, all told by from; complete
// says outputs lists every video output (else every label is Unknown).
func fromOutputs(from Source, outs []Output, complete bool) Profile {
	p := Profile{
		Encoder: Value{Unknown, from},
		Preset:  Value{Unknown, from},
		Ladder:  Value{Unknown, from},
		Hwaccel: Value{Unknown, from},
	}
	if !complete || len(outs) == 0 {
		// An output not yet read (or not understood) may differ from
		// those that were: nothing is known of the encode as a whole.
		return p
	}
	p.Ladder.Label, p.Outputs = ladderLabel(outs), outs
	p.Encoder.Label, p.Preset.Label = encoderOf(outs), presetOf(outs)
	return p
}

// encoderOf is the outputs' one encoder: stream copies aside unless every
// output is one, Mixed when two differ, Unknown when any is unknown.
func encoderOf(outs []Output) string {
	enc, copies := "", 0
	for _, o := range outs {
		switch {
		case o.Encoder == Copy:
			copies++
		case o.Encoder == "" || o.Encoder == Unknown:
			return Unknown
		case enc == "":
			enc = o.Encoder
		case enc != o.Encoder:
			enc = Mixed
		}
	}
	switch {
	case enc != "":
		return enc
	case copies > 0:
		return Copy
	}
	return Unknown
}

// presetOf is the encoding outputs' one preset: Other when two differ,
// Unknown when any is unknown.
func presetOf(outs []Output) string {
	preset, copies := "", 0
	for _, o := range outs {
		switch {
		case o.Encoder == Copy:
			copies++
		case o.Preset == "" || o.Preset == Unknown:
			return Unknown
		case preset == "":
			preset = o.Preset
		case preset != o.Preset:
			preset = Other
		}
	}
	switch {
	case preset != "":
		return preset
	case copies > 0:
		return Default
	}
	return Unknown
}
