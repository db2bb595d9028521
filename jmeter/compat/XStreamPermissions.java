// Lets JMeter 2.13 (the Debian/Ubuntu package) load test plans again.
//
// Why: Debian builds JMeter 2.13 against the system XStream (1.4.20). Since XStream 1.4.18 every
// type not on its allow-list is refused, and JMeter 2.13 predates that, so it never allows its own
// classes: loading ANY .jmx fails with ForbiddenClassException: org.apache.jmeter.save.ScriptWrapper.
// JMeter >= 5.4.2 configures the allow-list itself and needs none of this.
//
// How: saveservice.properties may name extra XStream converters ("_<class>=collection"); JMeter
// instantiates each with the XStream Mapper. This "converter" converts nothing: its constructor
// finds the SecurityMapper in that mapper chain and allows JMeter's own packages, and only those,
// on top of XStream's default allow-list (primitives, strings, collections). jmeter/run.sh compiles
// it into .tools/, appends it to a copy of saveservice.properties and points JMeter at both.
package jmetercompat;

import com.thoughtworks.xstream.converters.Converter;
import com.thoughtworks.xstream.converters.MarshallingContext;
import com.thoughtworks.xstream.converters.UnmarshallingContext;
import com.thoughtworks.xstream.io.HierarchicalStreamReader;
import com.thoughtworks.xstream.io.HierarchicalStreamWriter;
import com.thoughtworks.xstream.mapper.Mapper;
import com.thoughtworks.xstream.mapper.SecurityMapper;
import com.thoughtworks.xstream.security.WildcardTypePermission;

public final class XStreamPermissions implements Converter {
    private static final String[] JMETER_TYPES = {"org.apache.jmeter.**", "org.apache.jorphan.**"};

    public XStreamPermissions(Mapper mapper) {
        SecurityMapper security = (SecurityMapper) mapper.lookupMapperOfType(SecurityMapper.class);
        if (security == null) {
            throw new IllegalStateException("this XStream has no SecurityMapper: the shim is not needed");
        }
        security.addPermission(new WildcardTypePermission(JMETER_TYPES));
    }

    @Override
    public boolean canConvert(@SuppressWarnings("rawtypes") Class type) {
        return false;
    }

    @Override
    public void marshal(Object source, HierarchicalStreamWriter writer, MarshallingContext context) {
        throw new UnsupportedOperationException("converts nothing");
    }

    @Override
    public Object unmarshal(HierarchicalStreamReader reader, UnmarshallingContext context) {
        throw new UnsupportedOperationException("converts nothing");
    }
}
