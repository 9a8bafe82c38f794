// /docs: Swagger UI over the daemon's own /openapi.json (ngb/web/api_docs.py). The page is signed
// in by the API cookie, so "Try it out" calls the API as the dashboard does.
window.addEventListener('load', () => {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    validatorUrl: null,  // never send the document to an outside validator
    requestInterceptor: (req) => { req.headers['X-Requested-With'] = 'ngb-docs'; return req; },
  });
});
