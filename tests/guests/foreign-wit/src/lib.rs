//! foreign-wit: a scheduler-like component built against
//! `steward:policy@0.2.0`, a WIT version this host does not serve. The host
//! must refuse it at load, naming both versions. Never deploy it.

wit_bindgen::generate!({
    inline: r#"
        package steward:policy@0.2.0;

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
