/* Unit tests of projections/: envelope decode/encode and evolve for every event type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <stdlib.h>

#include "account.h"
#include "event.h"

static void test_type_names_roundtrip(void **state)
{
    (void)state;
    for (int t = 1; t < EV__COUNT; t++)
        assert_int_equal(event_type_parse(event_type_name((enum event_type)t)), t);
    assert_int_equal(event_type_parse("MoneyStolen"), EV_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
