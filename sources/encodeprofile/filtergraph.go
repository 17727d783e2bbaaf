package encodeprofile

import (
	"slices"
	"strconv"
	"strings"
)

// A filtergraph is read only as far as it is understood: each pad carries
// its media type, size and rate where a filter sets them from literal
// numbers, and anything else makes the part it touches unknown.

const (
	maxGraphFilters = 256 // more filters: the graph is not understood
	maxGraphBytes   = 1 << 16
)

type media uint8

const (
	mediaUnknown media = iota
	mediaVideo
	mediaAudio
)

// pad is what is known of the frames on a filter link.
type pad struct {
	media  media
	w, h   int     // 0: unknown
	fps    float64 // 0: unknown
	rateOf int     // 1+the input whose rate passes unchanged, when fps is unknown
}

type filter struct {
	ins, outs []string // link labels
	name      string
	args      string // raw; read for sizes and rates, never kept in a Profile
}

// splitGraph parses filtergraph syntax into chains of filters: ';' between
// chains, ',' between filters, "[label]" pads, single quotes and
// backslash escapes. ok is false for anything it does not follow.
func splitGraph(g string) (chains [][]filter, ok bool) {
	if len(g) > maxGraphBytes {
		return nil, false
	}
	var (
		chain   []filter
		cur     filter
		field   strings.Builder // name=args of cur
		inQuote bool
		n       int
	)
	endFilter := func() bool {
		text := strings.TrimSpace(field.String())
		field.Reset()
		if text == "" {
			return false
		}
		name, args, _ := strings.Cut(text, "=")
		name, _, _ = strings.Cut(name, "@") // instance name
		cur.name, cur.args = strings.TrimSpace(name), args
		chain = append(chain, cur)
		cur = filter{}
		n++
		return n <= maxGraphFilters
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case inQuote:
			if c == '\'' {
				inQuote = false
			}
			field.WriteByte(c)
		case c == '\'':
			inQuote = true
			field.WriteByte(c)
		case c == '\\':
			if i+1 >= len(g) {
				return nil, false
			}
			field.WriteByte(c)
			field.WriteByte(g[i+1])
			i++
		case c == '[':
			end := strings.IndexByte(g[i:], ']')
			if end < 0 {
				return nil, false
			}
			label := g[i+1 : i+end]
			i += end
			if strings.TrimSpace(field.String()) == "" {
				cur.ins = append(cur.ins, label)
			} else {
				cur.outs = append(cur.outs, label)
			}
		case c == ',' || c == ';':
			if !endFilter() {
				return nil, false
			}
			if c == ';' {
				chains = append(chains, chain)
				chain = nil
			}
		default:
			if len(cur.outs) > 0 && !strings.ContainsRune(" \t\r\n", rune(c)) {
				return nil, false // text after an output label
			}
			field.WriteByte(c)
		}
	}
	if inQuote || !endFilter() {
		return nil, false
	}
	return append(chains, chain), true
}

// splitArgs splits a filter's arguments at ':' (outside quotes, escapes) into
// positional values and key=value options.
func splitArgs(s string) (pos []string, named map[string]string, ok bool) {
	named = map[string]string{}
	var parts []string
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\'' {
				inQuote = false
			} else {
				b.WriteByte(c)
			}
		case c == '\'':
			inQuote = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, nil, false
			}
			b.WriteByte(s[i+1])
			i++
		case c == ':':
			parts = append(parts, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	if inQuote {
		return nil, nil, false
	}
	if s != "" {
		parts = append(parts, b.String())
	}
	for _, p := range parts {
		if k, v, isNamed := strings.Cut(p, "="); isNamed {
			named[strings.TrimSpace(k)] = strings.TrimSpace(v)
		} else if len(named) > 0 {
			return nil, nil, false // positional after named
		} else {
			pos = append(pos, strings.TrimSpace(p))
		}
	}
	return pos, named, true
}

// Filters whose output keeps the input's size and rate, frame for frame.
var keepsFrames = []string{
	"null", "copy", "format", "setsar", "setdar", "hflip", "vflip", "drawtext", "drawbox", "unsharp",
	"hqdn3d", "eq", "hue", "colorspace", "colormatrix", "showinfo", "settb", "hwupload",
	"hwupload_cuda", "hwdownload", "deband", "gblur", "boxblur", "fade", "lutyuv", "lutrgb", "curves",
	"nlmeans", "removegrain", "smartblur", "tonemap", "tonemap_opencl", "tonemap_vaapi",
}

// Filters that set the size from their first two arguments, w and h.
var scalers = []string{"scale", "scale_cuda", "scale_npp", "scale_qsv", "scale_vaapi", "scale_vulkan", "zscale"}

// Options of a scaler that leave the asked size exact; any other (say
// force_original_aspect_ratio) makes it unknown.
var scalerSafeOptions = []string{"w", "width", "h", "height", "flags", "interl", "in_range", "out_range",
	"in_color_matrix", "out_color_matrix", "format", "interp_algo", "mode", "filter", "f",
	"in_primaries", "out_primaries", "in_transfer", "out_transfer", "matrix", "m", "range", "r",
	"primaries", "p", "transfer", "t", "dither", "d"}

var audioFilters = []string{"anull", "aformat", "aresample", "asetpts", "atempo", "volume", "loudnorm",
	"pan", "apad", "atrim", "afade", "adelay", "acompressor", "dynaudnorm", "highpass", "lowpass", "aecho"}

// apply runs one single-input, single-output filter over p.
func apply(f filter, p pad) pad {
	name := f.name
	if p.media == mediaUnknown {
		switch {
		case slices.Contains(audioFilters, name):
			p.media = mediaAudio
		case slices.Contains(scalers, name) || slices.Contains(keepsFrames, name) || name == "fps" || name == "framerate":
			p.media = mediaVideo
		}
	}
	switch {
	case slices.Contains(keepsFrames, name) || slices.Contains(audioFilters, name):
		return p
	case slices.Contains(scalers, name):
		pos, named, ok := splitArgs(f.args)
		if !ok || len(pos) > 3 || (len(pos) == 3 && name != "scale") {
			p.w, p.h = 0, 0
			return p
		}
		w, h := "", ""
		if len(pos) > 0 {
			w = pos[0]
		}
		if len(pos) > 1 {
			h = pos[1]
		}
		for k, v := range named {
			switch {
			case k == "w" || k == "width":
				w = v
			case k == "h" || k == "height":
				h = v
			case !slices.Contains(scalerSafeOptions, k):
				p.w, p.h = 0, 0
				return p
			}
		}
		// Only literal sizes: "-2", "iw/2", "trunc(...)" are not guessed.
		p.w, p.h = literalDimension(w), literalDimension(h)
		return p
	case name == "fps" || name == "framerate":
		pos, named, ok := splitArgs(f.args)
		rate := ""
		if ok && len(pos) > 0 {
			rate = pos[0]
		}
		if v, isNamed := named["fps"]; isNamed {
			rate = v
		}
		for k := range named {
			if k != "fps" && k != "round" && k != "start_time" && k != "eof_action" {
				ok = false
			}
		}
		p.fps, p.rateOf = 0, 0
		if ok && len(pos) <= 1 {
			if r, known := frameRate(rate); known {
				p.fps = r
			}
		}
		return p
	case name == "yadif" || name == "yadif_cuda":
		pos, named, ok := splitArgs(f.args)
		mode := named["mode"]
		if len(pos) > 0 {
			mode = pos[0]
		}
		if !ok || (mode != "" && mode != "0" && mode != "send_frame") {
			p.fps, p.rateOf = 0, 0 // send_field doubles the rate
		}
		return p
	}
	return pad{media: p.media} // not understood: size and rate unknown
}

// literalDimension is a positive integer written as such, else 0.
func literalDimension(s string) int {
	if !plainDecimal(s) || strings.Contains(s, ".") {
		return 0
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > MaxDimension {
		return 0
	}
	return v
}

var rateNames = map[string]float64{
	"ntsc": 30000.0 / 1001, "pal": 25, "qntsc": 30000.0 / 1001, "qpal": 25, "sntsc": 30000.0 / 1001,
	"spal": 25, "film": 24, "ntsc-film": 24000.0 / 1001,
}

// frameRate reads a rate as ffmpeg takes it: a decimal, N/D, or a name.
func frameRate(s string) (float64, bool) {
	if r, ok := rateNames[s]; ok {
		return r, true
	}
	num, den, isRatio := strings.Cut(s, "/")
	if !plainDecimal(num) || (isRatio && !plainDecimal(den)) {
		return 0, false
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, false
	}
	if isRatio {
		d, err := strconv.ParseFloat(den, 64)
		if err != nil || d == 0 {
			return 0, false
		}
		n /= d
	}
	return n, fpsKnown(n)
}

var sizeNames = map[string][2]int{
	"ntsc": {720, 480}, "pal": {720, 576}, "qntsc": {352, 240}, "qpal": {352, 288}, "sntsc": {640, 480},
	"spal": {768, 576}, "film": {352, 240}, "ntsc-film": {352, 240}, "sqcif": {128, 96}, "qcif": {176, 144},
	"cif": {352, 288}, "4cif": {704, 576}, "16cif": {1408, 1152}, "qqvga": {160, 120}, "qvga": {320, 240},
	"vga": {640, 480}, "svga": {800, 600}, "xga": {1024, 768}, "uxga": {1600, 1200}, "qxga": {2048, 1536},
	"sxga": {1280, 1024}, "wxga": {1366, 768}, "wsxga": {1600, 1024}, "wuxga": {1920, 1200},
	"hd480": {852, 480}, "hd720": {1280, 720}, "hd1080": {1920, 1080}, "2k": {2048, 1080},
	"2kflat": {1998, 1080}, "2kscope": {2048, 858}, "4k": {4096, 2160}, "4kflat": {3996, 2160},
	"4kscope": {4096, 1716}, "nhd": {640, 360}, "hqvga": {240, 160}, "wqvga": {400, 240},
	"fwqvga": {432, 240}, "hvga": {480, 320}, "qhd": {960, 540}, "2kdci": {2048, 1080},
	"4kdci": {4096, 2160}, "uhd2160": {3840, 2160}, "uhd4320": {7680, 4320},
}

// frameSize reads -s: WxH or a name.
func frameSize(s string) (w, h int) {
	if wh, ok := sizeNames[s]; ok {
		return wh[0], wh[1]
	}
	ws, hs, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0
	}
	w, h = literalDimension(ws), literalDimension(hs)
	if w == 0 || h == 0 {
		return 0, 0
	}
	return w, h
}

// graph is a -filter_complex read into its labelled output pads.
type graph struct {
	ok   bool           // understood at all
	outs map[string]pad // output label to what is known of it
	// unlabeled reports an output pad without a label (ffmpeg maps it to
	// the first output file): that output's streams are not followed.
	unlabeled bool
}

// inputPad is the pad of an input stream named by a link label such as
// "0:v", "1:a:0" or "0".
func inputPad(label string) (pad, bool) {
	file, spec, _ := strings.Cut(label, ":")
	idx, err := strconv.Atoi(file)
	if err != nil || idx < 0 || idx > 1<<16 || !plainDecimal(file) {
		return pad{}, false
	}
	p := pad{rateOf: idx + 1}
	kind, _, _ := strings.Cut(spec, ":")
	switch kind {
	case "v", "V":
		p.media = mediaVideo
	case "a":
		p.media = mediaAudio
	}
	return p, true
}

// readGraph follows a -filter_complex from its inputs to its labelled
// outputs.
func readGraph(desc string) graph {
	chains, ok := splitGraph(desc)
	if !ok {
		return graph{}
	}
	g := graph{ok: true, outs: map[string]pad{}}
	links := map[string]pad{}  // labelled links not yet consumed
	early := map[string]bool{} // labels consumed before the filter that makes them
	for _, chain := range chains {
		var cur []pad
		for i, f := range chain {
			var in []pad
			if i > 0 {
				in = cur
			}
			for _, l := range f.ins {
				if p, isLink := links[l]; isLink {
					delete(links, l)
					in = append(in, p)
				} else if p, isInput := inputPad(l); isInput {
					in = append(in, p)
				} else {
					early[l] = true
					in = append(in, pad{}) // a label defined later: not followed
				}
			}
			if len(in) == 0 {
				in = []pad{{}} // the graph's first unused input stream: unknown
			}
			cur = run(f, in)
			if len(f.outs) > 0 {
				if len(f.outs) != len(cur) {
					cur = make([]pad, len(f.outs)) // not understood
				}
				for j, l := range f.outs {
					if !early[l] {
						links[l] = cur[j]
					}
				}
				cur = nil
			}
		}
		if len(cur) > 0 {
			g.unlabeled = true
		}
	}
	g.outs = links
	return g
}

// run applies filter f to its inputs and returns its outputs.
func run(f filter, in []pad) []pad {
	switch f.name {
	case "split", "asplit":
		n := 2
		if v, err := strconv.Atoi(strings.TrimSpace(f.args)); err == nil && v >= 1 && v <= 64 {
			n = v
		} else if f.args != "" {
			n = 0
		}
		if len(in) != 1 || n == 0 {
			break
		}
		p := in[0]
		if f.name == "split" {
			p.media = mediaVideo
		} else {
			p.media = mediaAudio
		}
		out := make([]pad, n)
		for i := range out {
			out[i] = p
		}
		return out
	}
	if len(in) == 1 {
		return []pad{apply(f, in[0])}
	}
	// Several inputs (overlay, hstack, concat, amix...): not followed.
	return []pad{{}}
}

// simpleGraph follows a -vf chain from the stream's own pad.
func simpleGraph(desc string, in pad) (pad, bool) {
	chains, ok := splitGraph(desc)
	if !ok || len(chains) != 1 {
		return pad{media: in.media}, false
	}
	p := in
	for _, f := range chains[0] {
		if len(f.ins) > 1 || len(f.outs) > 1 {
			return pad{media: in.media}, false
		}
		outs := run(f, []pad{p})
		if len(outs) != 1 {
			return pad{media: in.media}, false
		}
		p = outs[0]
	}
	p.media = in.media
	return p, true
}
