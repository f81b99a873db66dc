//! Glue between the generated bindings and [`Plugin`](crate::Plugin); used by `export!` only.

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::bindings::exports::flexgate::plugin::handler;
    use crate::bindings::flexgate::plugin::types as wit;
    use crate::{Action, Ctx, Plugin, Request, Response};
    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;

    pub use handler::Guest;
    pub use wit::{Action as WitAction, CallInfo};
    pub use wit_bindgen;

    /// The borrowed request handle as the generated trait spells it.
    pub type RequestBorrow<'a> = &'a wit::Request;
    /// The borrowed response handle as the generated trait spells it.
    pub type ResponseBorrow<'a> = &'a wit::Response;

    thread_local! {
        // One plugin value per instance (Wasm instances are single-threaded).
        static STATE: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
    }

    fn current<P: Plugin>() -> Result<Rc<P>, String> {
        let any = STATE
            .with(|s| s.borrow().clone())
            .ok_or("plugin not initialised")?;
        any.downcast::<P>()
            .map_err(|_| "plugin type mismatch".to_string())
    }

    fn ctx(info: CallInfo) -> Ctx {
        Ctx {
            client_addr: info.client_addr,
            route: info.route,
            request_id: info.request_id,
            stash: info.stash,
        }
    }

    pub fn init<P: Plugin>(config: &str) -> Result<(), String> {
        let p = crate::instantiate::<P>(config).map_err(|e| e.0)?;
        let p: Rc<dyn Any> = Rc::new(p);
        STATE.with(|s| *s.borrow_mut() = Some(p));
        Ok(())
    }

    pub fn on_request<P: Plugin>(info: CallInfo, req: &wit::Request) -> Result<WitAction, String> {
        let p = current::<P>()?;
        let mut r = Request::from_host(req);
        match p.on_request(&ctx(info), &mut r).map_err(|e| e.0)? {
            Action::Continue => Ok(WitAction::Continue),
            Action::Respond(resp) => {
                let (status, headers, body) = resp.into_parts();
                Ok(WitAction::Respond(wit::Reply {
                    status,
                    headers: headers.into_vec(),
                    body,
                }))
            }
        }
    }

    pub fn on_response<P: Plugin>(info: CallInfo, resp: &wit::Response) -> Result<(), String> {
        let p = current::<P>()?;
        let mut r = Response::from_host(resp);
        p.on_response(&ctx(info), &mut r).map_err(|e| e.0)
    }
}
