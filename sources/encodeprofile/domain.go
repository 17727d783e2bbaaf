package encodeprofile

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Labels outside any encoder's or preset's own vocabulary.
const (
	Unknown = "unknown" // no place said
	Other   = "other"   // a value outside the bounded domain
	Mixed   = "mixed"   // outputs encoded by different encoders
	Default = "default" // no preset was asked for: the encoder's own default
	Copy    = "copy"    // stream copy: nothing encoded
	None    = "none"    // no -hwaccel
)

// Encoders is the bounded encoder vocabulary, beside Mixed, Other and Unknown.
var Encoders = []string{
	"libx264", "libx265", "libsvtav1", "libaom-av1", "libvpx-vp9",
	"h264_nvenc", "hevc_nvenc", "av1_nvenc",
	"h264_qsv", "hevc_qsv", "av1_qsv",
	"h264_vaapi", "hevc_vaapi", "av1_vaapi",
	"h264_amf", "hevc_amf", "av1_amf",
	Copy,
}

// codecNames are codec names ffmpeg resolves to whichever encoder its build
// registered first (-c:v h264 may be libx264 or an NVENC one): naming the
// encoder from them would be a guess.
var codecNames = []string{"h264", "h265", "hevc", "av1", "vp9"}

// encoderLabel maps an encoder name as ffmpeg takes or prints it into the
// bounded vocabulary.
func encoderLabel(name string) string {
	switch {
	case slices.Contains(Encoders, name):
		return name
	case slices.Contains(codecNames, name):
		return Unknown
	default:
		return Other
	}
}

var (
	x26xPresets  = []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}
	nvencPresets = []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7",
		"default", "slow", "medium", "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp"}
	svtPresets = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"}
	qsvPresets = []string{"veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"}
)

// Presets returns the preset vocabulary of encoder (nil: it has none
// ffmpeg's -preset sets). For Unknown, Mixed and Other it is every
// vocabulary's union: the value is still one of a bounded set.
func Presets(encoder string) []string {
	switch {
	case encoder == "libx264" || encoder == "libx265":
		return x26xPresets
	case strings.HasSuffix(encoder, "_nvenc"):
		return nvencPresets
	case encoder == "libsvtav1":
		return svtPresets
	case strings.HasSuffix(encoder, "_qsv"):
		return qsvPresets
	case encoder == Unknown || encoder == Mixed || encoder == Other:
		return allPresets
	}
	return nil
}

var allPresets = func() []string {
	var all []string
	for _, v := range [][]string{x26xPresets, nvencPresets, svtPresets, qsvPresets} {
		for _, p := range v {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
	}
	return all
}()

// presetLabel maps the value of -preset for encoder into the bounded
// vocabulary; "" (no -preset) is Default.
func presetLabel(encoder, value string) string {
	switch {
	case value == "":
		return Default
	case encoder == Copy:
		return Default // nothing is encoded: a preset does nothing
	case slices.Contains(Presets(encoder), value):
		return value
	}
	return Other
}

// Hwaccels is the bounded vocabulary of -hwaccel, beside None and Other.
var Hwaccels = []string{"auto", "cuda", "nvdec", "cuvid", "qsv", "vaapi", "vdpau", "videotoolbox",
	"d3d11va", "d3d12va", "dxva2", "vulkan", "drm", "opencl", "amf"}

func hwaccelLabel(v string) string {
	switch {
	case v == "none":
		return None
	case slices.Contains(Hwaccels, v):
		return v
	}
	return Other
}

// Bounds of a ladder label.
const (
	MaxRungs          = 6    // more rungs make the ladder Other
	MaxDimension      = 8192 // W and H; beyond is an unknown part
	MaxFPS            = 240  // beyond is an unknown part
	DefaultMaxLadders = 32   // distinct ladders a Ladders registry admits
)

// rung is the label of one output: "WxH@fps", "?" for an unknown part.
func rung(o Output) string {
	dim := func(v int) string {
		if v <= 0 || v > MaxDimension {
			return "?"
		}
		return strconv.Itoa(v)
	}
	return dim(o.Width) + "x" + dim(o.Height) + "@" + fpsLabel(o.FPS)
}

// fpsLabel rounds to two decimals (30000/1001 is 29.97): a bounded set.
func fpsLabel(fps float64) string {
	if !fpsKnown(fps) {
		return "?"
	}
	return strconv.FormatFloat(math.Round(fps*100)/100, 'f', -1, 64)
}

// ladderLabel is the canonical ladder of outputs: rungs by width
// descending (then height, then rate), unknown parts last.
func ladderLabel(outs []Output) string {
	if len(outs) == 0 {
		return Unknown
	}
	if len(outs) > MaxRungs {
		return Other
	}
	sorted := slices.Clone(outs)
	key := func(v int) int {
		if v <= 0 || v > MaxDimension {
			return -1
		}
		return v
	}
	rate := func(f float64) float64 {
		if !fpsKnown(f) {
			return -1
		}
		return math.Round(f * 100)
	}
	slices.SortStableFunc(sorted, func(a, b Output) int {
		if c := key(b.Width) - key(a.Width); c != 0 {
			return c
		}
		if c := key(b.Height) - key(a.Height); c != 0 {
			return c
		}
		ra, rb := rate(a.FPS), rate(b.FPS)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	parts := make([]string, len(sorted))
	for i, o := range sorted {
		parts[i] = rung(o)
	}
	return strings.Join(parts, ",")
}

// Ladders admits at most a fixed number of distinct ladder labels over an
// exporter's life; past that a new ladder is Other, so a misbehaving caller
// cannot grow the label set without bound. Safe for concurrent use.
type Ladders struct {
	mu   sync.Mutex
	max  int
	seen map[string]struct{}
}

// NewLadders returns a registry admitting max distinct ladders (0 or less:
// DefaultMaxLadders).
func NewLadders(max int) *Ladders {
	if max <= 0 {
		max = DefaultMaxLadders
	}
	return &Ladders{max: max, seen: make(map[string]struct{})}
}

// Admit returns ladder if it was admitted before or there is room for it,
// else Other. Unknown and Other pass without taking room.
func (l *Ladders) Admit(ladder string) string {
	if ladder == Unknown || ladder == Other {
		return ladder
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[ladder]; ok {
		return ladder
	}
	if len(l.seen) >= l.max {
		return Other
	}
	l.seen[ladder] = struct{}{}
	return ladder
}

// Len is how many distinct ladders have been admitted.
func (l *Ladders) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}
