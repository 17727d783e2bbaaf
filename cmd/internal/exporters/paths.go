package exporters

import "flag"

// SharedStringVar is fs.StringVar for a flag that more than one source
// reads, such as --path.sysfs (RAPL, and energy per encode) and
// --path.procfs (docker, and energy per encode). worker-exporter registers
// every source's flags on one FlagSet, where a second definition would
// panic: the first call defines the flag, later ones share it, and every
// variable receives its value. Each source calls it with the same default
// and usage.
func SharedStringVar(fs *flag.FlagSet, p *string, name, value, usage string) {
	if f := fs.Lookup(name); f != nil {
		shared, ok := f.Value.(*sharedString)
		if !ok {
			panic("flag --" + name + " is shared by several sources: define it with SharedStringVar everywhere")
		}
		shared.vars = append(shared.vars, p)
		*p = shared.value
		return
	}
	*p = value
	fs.Var(&sharedString{vars: []*string{p}, value: value}, name, usage)
}

// sharedString is a string flag whose value every variable receives.
type sharedString struct {
	vars  []*string
	value string
}

func (s *sharedString) String() string {
	if s == nil {
		return ""
	}
	return s.value
}

func (s *sharedString) Set(v string) error {
	s.value = v
	for _, p := range s.vars {
		*p = v
	}
	return nil
}
