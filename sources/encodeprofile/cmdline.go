package encodeprofile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Bounds on a command line.
const (
	MaxCmdlineBytes = 256 << 10 // /proc/PID/cmdline read at most
	MaxArgs         = 4096      // more arguments: nothing is known
	maxCmdOutputs   = 64        // video output streams followed
)

var (
	ErrNotFFmpeg      = errors.New("not an ffmpeg command line")
	ErrCmdlineTooLong = fmt.Errorf("command line longer than %d bytes", MaxCmdlineBytes)
	ErrNoCmdline      = errors.New("empty command line: a zombie or a kernel thread")
)

// ReadCmdline reads the argument vector of process pid under procRoot
// (normally /proc), at most MaxCmdlineBytes. A zombie or kernel thread has
// none: an error.
func ReadCmdline(procRoot string, pid int) ([]string, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxCmdlineBytes+1))
	switch {
	case err != nil:
		return nil, err
	case len(b) > MaxCmdlineBytes:
		return nil, ErrCmdlineTooLong
	case len(b) == 0:
		return nil, ErrNoCmdline
	}
	b = bytes.TrimSuffix(b, []byte{0})
	return strings.Split(string(b), "\x00"), nil
}

// FromProcess reads the profile from process pid's command line; an error
// when it cannot be read or is not ffmpeg's.
func FromProcess(procRoot string, pid int) (Profile, error) {
	argv, err := ReadCmdline(procRoot, pid)
	if err != nil {
		return Profile{}, err
	}
	if !isFFmpeg(argv) {
		return Profile{}, ErrNotFFmpeg
	}
	return FromArgs(argv), nil
}

func isFFmpeg(argv []string) bool {
	return len(argv) > 0 && strings.HasPrefix(path.Base(argv[0]), "ffmpeg")
}

// Options of ffmpeg (5.x to 7.x) that take no argument; every other option,
// ffmpeg's own or a codec's, format's or filter's AVOption, takes exactly
// one. "-noX" for a boolean X takes none either.
var flagOptions = []string{
	"y", "n", "ignore_unknown", "copy_unknown", "recast_media", "benchmark", "benchmark_all", "stdin",
	"dump", "hex", "re", "copyts", "start_at_zero", "shortest", "bitexact", "xerror", "copyinkf",
	"debug_ts", "find_stream_info", "vn", "an", "sn", "dn", "psnr", "vstats", "qphist", "force_fps",
	"stats", "auto_conversion_filters", "hide_banner", "report", "accurate_seek", "fix_sub_duration",
	"fix_sub_duration_heartbeat", "print_graphs", "drop_changed", "L", "version", "buildconf",
	"formats", "muxers", "demuxers", "devices", "codecs", "decoders", "encoders", "bsfs", "protocols",
	"filters", "pix_fmts", "layouts", "sample_fmts", "dispositions", "colors", "hwaccels",
}

// Options that take an argument in one ffmpeg version and none in another
// (5.1's -autorotate 1 against 7.0's -autorotate): where one appears the
// rest of the command line cannot be read.
var versionDependentOptions = []string{"autorotate", "autoscale"}

type option struct {
	name, spec, value string
	fromFile          bool // -/name: the value is a file to read it from
}

type optGroup []option

// last finds the last option named one of names; used for per-file
// options with no stream specifier.
func (g optGroup) last(names ...string) (option, bool) {
	for i := len(g) - 1; i >= 0; i-- {
		if slices.Contains(names, g[i].name) {
			return g[i], true
		}
	}
	return option{}, false
}

// FromArgs reads the profile from an ffmpeg argument vector (argv[0] is
// the program). Options are bound to the input or output they precede, as
// ffmpeg binds them; what is not understood is Unknown, never guessed.
//
// It assumes each "-map N:v" names one video stream (as a live input
// has); "-map N" (every stream) leaves the ladder unknown.
func FromArgs(argv []string) Profile {
	unknown := fromOutputs(FromCmdline, nil, false)
	if len(argv) < 2 || len(argv) > MaxArgs {
		return unknown
	}
	var (
		inputs, outputs []optGroup
		cur             optGroup
		complex         string // every -filter_complex, as one graph
		complexUnknown  bool   // a script: not read
		hasComplex      bool
	)
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if len(a) < 2 || a[0] != '-' {
			outputs, cur = append(outputs, cur), nil // an output URL; its text is not kept
			continue
		}
		name, fromFile := strings.CutPrefix(a[1:], "/")
		base, spec, _ := strings.Cut(name, ":")
		switch {
		case slices.Contains(versionDependentOptions, base):
			return unknown
		case !fromFile && (slices.Contains(flagOptions, base) || isNegatedFlag(base)):
			cur = append(cur, option{name: base, spec: spec})
			continue
		}
		if i+1 >= len(argv) {
			return unknown // ffmpeg would refuse it
		}
		i++
		switch base {
		case "i":
			inputs, cur = append(inputs, cur), nil // the input URL is not kept
		case "filter_complex", "lavfi":
			if fromFile {
				complexUnknown = true
			}
			if hasComplex {
				complex += ";" // labels are unique across graphs: one graph reads the same
			}
			hasComplex, complex = true, complex+argv[i]
		case "filter_complex_script":
			hasComplex, complexUnknown = true, true
		default:
			cur = append(cur, option{name: base, spec: spec, value: argv[i], fromFile: fromFile})
		}
	}
	if len(outputs) == 0 {
		return unknown
	}
	var g graph
	if hasComplex && !complexUnknown {
		g = readGraph(complex)
	}
	c := cmdline{inputs: len(inputs), graph: g, hasGraph: hasComplex}
	var outs []Output
	complete := true
	for i, out := range outputs {
		streams, ok := c.videoStreams(out, i == 0)
		if !ok || len(outs)+len(streams) > maxCmdOutputs {
			complete = false
			break
		}
		for _, s := range streams {
			outs = append(outs, c.output(out, s))
		}
	}
	p := fromOutputs(FromCmdline, outs, complete)
	p.Hwaccel = Value{hwaccelOf(inputs), FromCmdline}
	return p
}

func isNegatedFlag(name string) bool {
	rest, ok := strings.CutPrefix(name, "no")
	return ok && (slices.Contains(flagOptions, rest) || slices.Contains(versionDependentOptions, rest))
}

// hwaccelOf is the inputs' -hwaccel: None without one, Other when two differ.
func hwaccelOf(inputs []optGroup) string {
	label := ""
	for _, in := range inputs {
		o, ok := in.last("hwaccel")
		if !ok {
			continue
		}
		switch l := hwaccelLabel(o.value); {
		case label == "":
			label = l
		case label != l:
			return Other
		}
	}
	if label == "" {
		return None
	}
	return label
}

type cmdline struct {
	inputs   int
	graph    graph
	hasGraph bool
}

// videoStream is one video stream of an output file.
type videoStream struct {
	pad        pad
	index      int  // among the file's video streams (v:N)
	abs        int  // among all the file's streams, -1 unknown
	fromFilter bool // fed by -filter_complex: -vf does not apply
}

// videoStreams lists an output file's video streams as ffmpeg creates
// them; false when that cannot be told.
func (c *cmdline) videoStreams(out optGroup, first bool) ([]videoStream, bool) {
	if o, ok := out.last("f"); ok && o.value == "tee" {
		return nil, false // one encode, several muxers: not followed
	}
	if _, ok := out.last("var_stream_map"); ok {
		return nil, false // HLS variants split the streams among playlists
	}
	_, noVideo := out.last("vn")
	_, noAudio := out.last("an")
	_, noSubs := out.last("sn")
	_, noData := out.last("dn")
	var maps []string
	for _, o := range out {
		if o.name == "map" {
			if o.fromFile {
				return nil, false
			}
			maps = append(maps, o.value)
		}
	}
	if len(maps) == 0 {
		if c.hasGraph && first && (!c.graph.ok || c.graph.unlabeled) {
			return nil, false // an unlabelled graph output goes to the first file
		}
		if noVideo {
			return nil, true
		}
		// ffmpeg picks one video stream, the best of every input's: its
		// rate is known to be an input's only with one input.
		p := pad{media: mediaVideo}
		if c.inputs == 1 {
			p.rateOf = 1
		}
		return []videoStream{{pad: p, abs: 0}}, true
	}
	var streams []videoStream
	abs := 0
	for _, m := range maps {
		if strings.HasPrefix(m, "-") {
			if kind := mapKind(m[1:]); kind == 'a' || kind == 's' || kind == 'd' || kind == 't' {
				continue // removes no video
			}
			return nil, false
		}
		m, _, _ = strings.Cut(m, ",") // a sync stream
		m = strings.TrimSuffix(m, "?")
		if label, ok := strings.CutPrefix(m, "["); ok {
			label, ok = strings.CutSuffix(label, "]")
			p, found := c.graph.outs[label]
			if !ok || !c.graph.ok || !found {
				return nil, false
			}
			switch p.media {
			case mediaVideo:
				streams = append(streams, videoStream{pad: p, index: len(streams), abs: abs, fromFilter: true})
			case mediaAudio:
			default:
				return nil, false
			}
			if abs >= 0 {
				abs++
			}
			continue
		}
		file, spec, _ := strings.Cut(m, ":")
		idx, err := strconv.Atoi(file)
		if err != nil || !plainDecimal(file) || idx >= c.inputs {
			return nil, false
		}
		kind, rest, _ := strings.Cut(spec, ":")
		switch {
		case kind == "v" || kind == "V":
			if noVideo {
				continue
			}
			streams = append(streams, videoStream{pad: pad{media: mediaVideo, rateOf: idx + 1}, index: len(streams), abs: abs})
			if abs >= 0 {
				abs++
			}
		case (kind == "a" && noAudio) || (kind == "s" && noSubs) || (kind == "d" && noData):
		case kind == "a" || kind == "s" || kind == "d" || kind == "t":
			if abs >= 0 && plainDecimal(rest) && !strings.Contains(rest, ".") {
				abs++ // exactly one stream
			} else {
				abs = -1 // as many as the input has
			}
		default:
			return nil, false // every stream, or one by index: of unknown kinds
		}
	}
	return streams, true
}

func mapKind(m string) byte {
	_, spec, _ := strings.Cut(m, ":")
	if spec == "" {
		return 0
	}
	return spec[0]
}

type lookup uint8

const (
	absent lookup = iota
	set
	unsure // a stream specifier that may or may not match this stream was last
)

// perStream finds the value of a per-stream option for stream s: the last
// one whose specifier matches wins, as in ffmpeg.
func perStream(out optGroup, s videoStream, names ...string) (string, lookup) {
	value, state := "", absent
	for _, o := range out {
		if !slices.Contains(names, o.name) {
			continue
		}
		spec := o.spec
		if o.name == "vcodec" || o.name == "vf" || (o.name == "b" && spec == "") {
			spec = "v" // the video-only spellings
		}
		switch matches(spec, s) {
		case yes:
			value, state = o.value, set
			if o.fromFile {
				state = unsure
			}
		case maybe:
			state = unsure
		}
	}
	return value, state
}

type match uint8

const (
	no match = iota
	yes
	maybe
)

// matches tells whether stream specifier spec selects video stream s.
func matches(spec string, s videoStream) match {
	kind, rest, _ := strings.Cut(spec, ":")
	switch {
	case spec == "":
		return yes
	case kind == "v" || kind == "V":
		if rest == "" {
			return yes
		}
		n, err := strconv.Atoi(rest)
		if err != nil || !plainDecimal(rest) {
			return maybe
		}
		return boolMatch(n == s.index)
	case kind == "a" || kind == "s" || kind == "d" || kind == "t":
		return no
	case plainDecimal(spec) && !strings.Contains(spec, "."):
		n, _ := strconv.Atoi(spec)
		if s.abs < 0 {
			return maybe
		}
		return boolMatch(n == s.abs)
	}
	return maybe // programs, ids, metadata, dispositions
}

func boolMatch(b bool) match {
	if b {
		return yes
	}
	return no
}

// output works out one video output stream from its file's options.
func (c *cmdline) output(out optGroup, s videoStream) Output {
	var o Output
	codec, state := perStream(out, s, "c", "codec", "vcodec")
	switch state {
	case set:
		o.Encoder = encoderLabel(codec)
	default:
		o.Encoder = Unknown // the muxer's default encoder, build-dependent
	}
	if o.Encoder == Copy {
		o.Preset = Default
		o.rateOf = s.pad.rateOf // frames pass as they come
		return o
	}

	preset, state := perStream(out, s, "preset")
	if _, files := out.last("pre", "vpre", "fpre"); files || state == unsure {
		o.Preset = Unknown // preset files may set it
	} else {
		o.Preset = presetLabel(o.Encoder, preset)
	}

	p := s.pad
	if !s.fromFilter {
		switch desc, state := perStream(out, s, "filter", "vf"); state {
		case set:
			p, _ = simpleGraph(desc, p)
		case unsure:
			p = pad{media: p.media}
		}
	}
	if _, scripts := out.last("filter_script"); scripts {
		p = pad{media: p.media}
	}
	// -s and -r act after the filters, wherever they stand.
	switch v, state := perStream(out, s, "s"); state {
	case set:
		p.w, p.h = frameSize(v)
	case unsure:
		p.w, p.h = 0, 0
	}
	switch v, state := perStream(out, s, "r"); state {
	case set:
		p.fps, _ = frameRate(v)
		p.rateOf = 0
	case unsure:
		p.fps, p.rateOf = 0, 0
	}
	if _, capped := perStream(out, s, "fpsmax"); capped != absent {
		p.fps, p.rateOf = 0, 0
	}
	o.Width, o.Height, o.FPS, o.rateOf = p.w, p.h, p.fps, p.rateOf
	if o.FPS > 0 {
		o.rateOf = 0
	}
	if v, state := perStream(out, s, "b"); state == set {
		o.BitrateBPS = bitrate(v)
	}
	if v, state := perStream(out, s, "crf"); state == set && plainDecimal(v) {
		if crf, err := strconv.ParseFloat(v, 64); err == nil && crf <= 63 {
			o.CRF, o.HasCRF = crf, true
		}
	}
	return o
}

// bitrate reads "2M", "2500k", "800000"; 0 where not understood.
func bitrate(s string) float64 {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k") || strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, s[:len(s)-1]
	}
	if !plainDecimal(s) {
		return 0
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return v * mult
}
