//! foreign-wit: a scheduler-like component built against
//! `steward:policy@0.1.0`, the WIT version before this host's. The host
//! must refuse it at load, naming both versions. Never deploy it.

wit_bindgen::generate!({
    inline: r#"
        package steward:policy@0.1.0;

        interface log {
            enum log-level { debug, info, warn, error }
            emit: func(level: log-level, message: string);
        }

        world scheduler {
            import log;
            export validate-settings: func(settings: string) -> result<_, string>;
        }
    "#,
    world: "scheduler",
});

struct ForeignWit;

impl Guest for ForeignWit {
    fn validate_settings(settings: String) -> Result<(), String> {
        steward::policy::log::emit(steward::policy::log::LogLevel::Info, &settings);
        Ok(())
    }
}

export!(ForeignWit);
