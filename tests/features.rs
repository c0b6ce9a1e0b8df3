//! The Docker integration tests (tests/it) need `--features test-support`; without it cargo
//! skips them silently. This test makes that mistake loud instead.

#[cfg(not(feature = "test-support"))]
#[test]
fn integration_tests_need_the_test_support_feature() {
    panic!(
        "the integration tests were skipped: run `cargo test --features test-support` \
         (see README, \"Running the tests\")"
    );
}
