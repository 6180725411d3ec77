//! Any string: topic and filter parsing never panic; a parsed topic used as a filter matches
//! itself; a filter is always a subset of itself.
#![no_main]
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter, TopicName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = TopicName::parse(s) {
        let f = TopicFilter::parse(s).expect("a topic name is a valid filter");
        assert!(f.matches(&t));
    }
    if let Ok(f) = TopicFilter::parse(s) {
        assert!(f.is_subset_of(&f));
    }
    let _ = SubscriptionFilter::parse(s);
});
