/* Pages work without JavaScript; this marks that it runs, for the few controls that get nicer with it. */
document.documentElement.classList.add("js");
