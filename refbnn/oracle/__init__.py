"""Verifying other implementations (docs/semantics.md §11): the claims checker
(`checker`), the registry of alternative conventions and its variant engine
(`conventions`), the diagnosis of failures and traces (`diagnose`), statistical bit
error claims and the injector audit (`statistics`), and `verify --self` (`selfcheck`)."""
