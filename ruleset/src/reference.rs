//! A deliberately naive reference interpreter of the IR, used only by tests.
